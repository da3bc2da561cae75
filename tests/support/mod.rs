#![allow(dead_code)]
pub mod daemon;
pub mod env;
pub mod gunicorn;
pub mod haproxy;
pub mod images;
pub mod load;
pub mod moto;
pub mod reports;
