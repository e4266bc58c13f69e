#![allow(dead_code)]
pub mod scenarios;
