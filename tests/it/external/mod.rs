//! Real peers, installed by the test command: a real coderd (`coder`, run last by the test
//! command as it waits for coderd's build), OpenSSH, Prometheus and Chromium.

mod chromium;
mod coder;
mod openssh;
mod prometheus;
