#![allow(dead_code)]
pub mod env;
pub mod live;
pub mod scenarios;
pub mod schemas;
pub mod trace;
