//! The names scaletestd gives workspaces, `<prefix>-<run>-<n>`, and the one parser that tells
//! ours from anyone else's.
//!
//! Everything that makes, limits or recognises a name is here, so what the runner creates, what
//! the configuration allows and what a sweep deletes cannot disagree: the largest count a
//! prefix allows is derived from Coder's 32-character limit on workspace names
//! (codersdk.NameValid), and [`parse`] accepts exactly the names [`workspace_name`] can make.

use rand::Rng;

/// Coder's limit on workspace names (codersdk.NameValid).
pub const MAX_WORKSPACE_NAME: usize = 32;
/// Length of a run id: the `<run>` in `<prefix>-<run>-<n>`.
pub const RUN_ID_LEN: usize = 6;
/// The most workspaces one scenario may drive, whatever room its prefix leaves.
pub const MAX_COUNT: u32 = 99_999;

/// A fresh run id: lowercase letters and digits, starting with a letter.
pub fn new_run_id() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut id = String::with_capacity(RUN_ID_LEN);
    id.push(LETTERS[rng.random_range(0..LETTERS.len())] as char);
    for _ in 1..RUN_ID_LEN {
        id.push(ALNUM[rng.random_range(0..ALNUM.len())] as char);
    }
    id
}

/// `<prefix>-<run>-<n>`.
pub fn workspace_name(prefix: &str, run: &str, index: u32) -> String {
    format!("{prefix}-{run}-{index}")
}

/// Digits left for `<n>` after `<prefix>-<run>-`.
fn index_digits(prefix: &str) -> usize {
    MAX_WORKSPACE_NAME.saturating_sub(prefix.len() + 1 + RUN_ID_LEN + 1)
}

/// The largest count `prefix` leaves room for (names are numbered from 1), at most
/// [`MAX_COUNT`]; 0 when the prefix leaves no room at all.
pub fn max_count(prefix: &str) -> u32 {
    let digits = index_digits(prefix).min(7) as u32;
    if digits == 0 {
        return 0;
    }
    (10u32.pow(digits) - 1).min(MAX_COUNT)
}

/// The longest prefix that still leaves room for `count` workspaces.
pub fn max_prefix_len(count: u32) -> usize {
    let digits = count.max(1).to_string().len();
    MAX_WORKSPACE_NAME - (1 + RUN_ID_LEN + 1) - digits
}

/// Whether `prefix` can start our names: letters, digits and single inner dashes (Coder's
/// name rule), leaving room for at least one digit of `<n>`.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let ok = !prefix.is_empty()
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !prefix.starts_with('-')
        && !prefix.ends_with('-')
        && !prefix.contains("--");
    if !ok {
        return Err(format!(
            "invalid workspace_prefix {prefix:?}: expected letters, digits and single inner dashes"
        ));
    }
    if index_digits(prefix) == 0 {
        return Err(format!(
            "workspace_prefix {prefix:?} is {} characters: with `-<run>-<n>` it cannot fit Coder's {MAX_WORKSPACE_NAME}-character names (at most {} characters)",
            prefix.len(),
            max_prefix_len(1)
        ));
    }
    Ok(())
}

/// Whether `count` workspaces fit the names `prefix` makes.
pub fn check_count(prefix: &str, count: u32) -> Result<(), String> {
    let max = max_count(prefix);
    if count == 0 || count > max {
        return Err(format!(
            "count is {count}: expected 1 to {max} (Coder's names are at most {MAX_WORKSPACE_NAME} characters, and workspace_prefix {prefix:?} leaves room for {} digits)",
            index_digits(prefix).min(7)
        ));
    }
    Ok(())
}

/// Parses `<prefix>-<run>-<n>`: the run id and `n` when the name is one of ours.
pub fn parse<'a>(prefix: &str, name: &'a str) -> Option<(&'a str, u32)> {
    if name.len() > MAX_WORKSPACE_NAME {
        return None;
    }
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let (run, n) = rest.split_once('-')?;
    let run_ok = run.len() == RUN_ID_LEN
        && run.starts_with(|c: char| c.is_ascii_lowercase())
        && run
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let n_ok = !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) && !n.starts_with('0');
    if !(run_ok && n_ok) {
        return None;
    }
    let n: u32 = n.parse().ok()?;
    (n <= max_count(prefix)).then_some((run, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_exact_shape_matches() {
        assert_eq!(
            parse("scaletest", "scaletest-abc123-7"),
            Some(("abc123", 7))
        );
        assert_eq!(parse("scaletest", "scaletest-abc123-07"), None);
        assert_eq!(parse("scaletest", "scaletest-abc12-7"), None);
        assert_eq!(parse("scaletest", "scaletest-1bc123-7"), None);
        assert_eq!(parse("scaletest", "scaletest-abc123-7x"), None);
        assert_eq!(parse("scaletest", "scaletestx-abc123-7"), None);
        assert_eq!(parse("scaletest", "my-scaletest-abc123-7"), None);
        assert_eq!(parse("st", "st-abc123-7-1"), None);
        assert_eq!(parse("st", "st-abc123-99999"), Some(("abc123", 99_999)));
        assert_eq!(
            parse("st", "st-abc123-100000"),
            None,
            "more than a count can be"
        );
    }

    #[test]
    fn limits_follow_the_prefix() {
        assert_eq!(max_count("scaletest"), MAX_COUNT);
        assert_eq!(max_count(&"p".repeat(19)), 99_999);
        assert_eq!(max_count(&"p".repeat(20)), 9_999);
        assert_eq!(max_count(&"p".repeat(23)), 9);
        assert_eq!(max_count(&"p".repeat(24)), 0);
        assert!(check_prefix(&"p".repeat(24)).is_err());
        assert!(check_count(&"p".repeat(23), 10).is_err());
        assert!(check_count(&"p".repeat(23), 9).is_ok());
        assert_eq!(max_prefix_len(99_999), 19);
    }

    /// Every name the daemon can make is recognised by a sweep, fits Coder's limit, and no
    /// other prefix claims it: prefixes of every length × run ids × indexes up to the limit.
    #[test]
    fn every_name_we_make_is_ours_and_fits() {
        let mut rng = rand::rng();
        let mut checked = 0;
        for len in 1..=max_prefix_len(1) {
            let prefix: String = (0..len)
                .map(|i| {
                    if i > 0 && i + 1 < len && rng.random_bool(0.2) {
                        '-'
                    } else {
                        (b'a' + rng.random_range(0..26)) as char
                    }
                })
                .collect::<String>()
                .replace("--", "-a");
            let prefix = prefix.trim_matches('-').to_string();
            if check_prefix(&prefix).is_err() {
                continue;
            }
            let max = max_count(&prefix);
            for _ in 0..50 {
                let run = new_run_id();
                let indexes = [1, 2, 9, 10, max / 2 + 1, max.saturating_sub(1).max(1), max];
                for index in indexes.into_iter().filter(|i| *i <= max) {
                    let name = workspace_name(&prefix, &run, index);
                    assert!(name.len() <= MAX_WORKSPACE_NAME, "{name}");
                    assert_eq!(parse(&prefix, &name), Some((run.as_str(), index)), "{name}");
                    // A prefix that is a proper prefix of ours never claims our names.
                    if let Some((shorter, _)) = prefix.rsplit_once('-') {
                        assert_eq!(parse(shorter, &name), None, "{shorter} claims {name}");
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 5_000, "{checked}");
    }
}
