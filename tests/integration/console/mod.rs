//! DESIGN.md, "Console": `kubectl atk console` in a real browser, and the `kubectl atk` plugin.

mod browser;
mod plugin;
mod plugin_create;
mod plugin_flags;
mod web_console;
