//! Kong's bundled plugins, written with kong-pdk: same names, priorities, schemas and
//! behaviour as Kong's Lua ones. Linking this crate registers them.
