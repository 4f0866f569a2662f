//! The classic Prometheus text format, derived from the OpenMetrics the registry encodes:
//! `promtool` and default scrapes read only the classic format.

/// OpenMetrics text → Prometheus classic text (format 0.0.4): no exemplars, no `# EOF`, no
/// `# UNIT`, and counter families named with their `_total` suffix as classic parsers expect.
pub fn to_classic_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut lines = om.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|r| r.strip_suffix(" counter"))
        {
            out.push_str(&format!("# TYPE {name}_total counter\n"));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            // HELP comes right before its TYPE: look at the next line.
            let counter = lines
                .peek()
                .and_then(|l| l.strip_prefix("# TYPE "))
                .is_some_and(|t| t.strip_suffix(" counter") == Some(name));
            if counter {
                out.push_str(&format!("# HELP {name}_total {help}\n"));
                continue;
            }
        }
        // Drop an exemplar: ` # {labels} value [timestamp]` after the sample.
        let sample = match line.find(" # {") {
            Some(i) if !line.starts_with('#') => &line[..i],
            _ => line,
        };
        out.push_str(sample);
        out.push('\n');
    }
    out
}
