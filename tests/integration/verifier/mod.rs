//! DESIGN.md, "Verifier": the TokenReview webhook, its server, hostile clients and padded objects.

mod hostile;
mod padding;
mod server;
// `whoami` is used by the lifecycle tests too.
pub(crate) mod webhook;
