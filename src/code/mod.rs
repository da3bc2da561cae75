//! Code releases for services that reload instead of swapping containers: bundles unpacked into
//! `<app_root>/releases/<deploy id>/`, and the `current` symlink switched atomically (the layout
//! ops people know from Capistrano).

pub mod bundle;
pub mod layout;
