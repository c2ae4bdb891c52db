//! DESIGN.md, "Never": the token value appears in its Secret and nowhere else.

mod leaks;
