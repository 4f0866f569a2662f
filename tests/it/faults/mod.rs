//! Faults: Coder down and back, storms and stalls, a front that sheds load and cuts streams,
//! and secrets kept out of everything a failure prints.

mod coder;
mod daemon;
mod front;
mod secrets;
