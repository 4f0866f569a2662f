//! Cron schedules: checked with the same parser settings tokio-cron-scheduler uses, so a
//! schedule that passes `scaletestd check` is one the daemon can run.

/// Checks a six-field cron expression (with seconds), e.g. `"0 */15 * * * *"`.
pub fn check_cron(expr: &str) -> Result<(), String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "invalid schedule {expr:?} ({e}): expected cron with seconds, such as \"0 */15 * * * *\""
            )
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn seconds_are_required() {
        assert!(super::check_cron("0 */15 * * * *").is_ok());
        assert!(super::check_cron("*/15 * * * *").is_err());
        assert!(super::check_cron("0 61 * * * *").is_err());
    }
}
