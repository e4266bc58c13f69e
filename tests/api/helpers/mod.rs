#![allow(dead_code)]
pub mod app;
pub mod env;
pub mod live;
pub mod procs;
pub mod receiver;
pub mod scenarios;
pub mod schemas;
pub mod services;
pub mod trace;
