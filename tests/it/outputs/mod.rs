//! What users read: traces, the summary line and failure budgets, the status history, and
//! the deployment files.

mod budget;
mod deploy;
mod history;
mod traces;
