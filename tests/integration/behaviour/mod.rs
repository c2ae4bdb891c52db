//! DESIGN.md, "Behaviour": issue, revoke, delete, repair; crashes, hostile tenants and partitions.

mod access_tokens;
mod crash_safety;
mod edge_cases;
mod hostile_controller;
mod hostile_partition;
mod verified_record;
