//! End-to-end tests of hookbridge: real HTTP on loopback ports, real
//! signatures, the real embedded bus, and the `hookbridge` binary itself.

mod asyncapi;
mod attempts;
mod binary;
mod browser;
mod catalogue;
mod cli;
mod console;
mod docs;
mod filters;
mod hostile;
mod limits;
mod matrix;
mod observability;
mod ordering;
mod outage;
mod rejections;
mod relay;
mod relay_auth;
mod restarts;
mod streams;
mod support;
mod tls;
mod unavailable;
