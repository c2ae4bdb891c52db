//! DESIGN.md, "Lifecycle beyond create/revoke/delete" and "Scope policy and the kill switch".

// The file keeps its name: it covers the kill switch, token policy, ExpiringSoon, rotation,
// restart targets and idleness, which no narrower name describes.
#[allow(clippy::module_inception)]
mod lifecycle;
