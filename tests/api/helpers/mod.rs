#![allow(dead_code)]
pub mod app;
pub mod chaos;
pub mod config;
pub mod env;
pub mod live;
pub mod nats;
pub mod own_process;
pub mod procs;
pub mod receiver;
pub mod scenarios;
pub mod schemas;
pub mod services;
pub mod trace;
