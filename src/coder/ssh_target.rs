//! How Coder's CLI reads the target of `coder ssh <target>` (cli/ssh.go,
//! `findWorkspaceAndAgentByHostname`, `normalizeWorkspaceInput`, `getWorkspaceAndAgent`;
//! cli/root.go `namedWorkspace`).
//!
//! The simulator's `coder ssh` stand-in parses its argument with this, so a proxy command
//! that would fail against Coder fails in our tests too; `scaletestd check` uses it to show
//! how Coder will read the configured command.
//!
//! The rules: a host prefix is stripped only with `--ssh-host-prefix`, a `.<suffix>` only with
//! `--hostname-suffix`; then the rest is split on runs of `/` and `.`, and on `--`:
//! one part is a workspace, two are `owner/workspace` when the input had `/` or `--`, else
//! `workspace.agent`; three are `owner/workspace.agent`; more are taken as written, which
//! then fails to resolve.

/// What `coder ssh` will look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// `None`: the token's own user (`me`).
    pub owner: Option<String>,
    /// A workspace name, or a workspace id (Coder looks a UUID up by id).
    pub workspace: String,
    /// `None`: the workspace's only agent.
    pub agent: Option<String>,
}

/// Parses `input` as `coder ssh [--ssh-host-prefix P] [--hostname-suffix S] input` does.
pub fn parse(input: &str, host_prefix: &str, hostname_suffix: &str) -> Result<SshTarget, String> {
    let qualified_suffix = format!(".{hostname_suffix}");
    let host = if !host_prefix.is_empty() && input.starts_with(host_prefix) {
        &input[host_prefix.len()..]
    } else if !hostname_suffix.is_empty() && input.ends_with(&qualified_suffix) {
        &input[..input.len() - qualified_suffix.len()]
    } else {
        input
    };
    let normalized = normalize(host);
    // getWorkspaceAndAgent: split on "."; the first part names the workspace, the second
    // (if any) the agent.
    let mut dotted = normalized.split('.');
    let identifier = dotted.next().unwrap_or_default();
    let agent = dotted.next().map(str::to_string);
    // namedWorkspace: an id, `name` (owner me) or `owner/name`.
    let parts: Vec<&str> = identifier.split('/').collect();
    let (owner, workspace) = match parts.as_slice() {
        [name] => (None, name.to_string()),
        [owner, name] => (Some(owner.to_string()), name.to_string()),
        _ => return Err(format!("invalid workspace name: {identifier:?}")),
    };
    if workspace.is_empty() {
        return Err(format!("no workspace name in {input:?}"));
    }
    Ok(SshTarget {
        owner,
        workspace,
        agent: agent.filter(|a| !a.is_empty()),
    })
}

/// `normalizeWorkspaceInput`: split on the regular expression `[/.]+|--`.
fn normalize(input: &str) -> String {
    let parts = split(input);
    match parts.as_slice() {
        [_] => input.to_string(),
        [a, b] if input.contains('/') || input.contains("--") => format!("{a}/{b}"),
        [a, b] => format!("{a}.{b}"),
        [a, b, c] => format!("{a}/{b}.{c}"),
        _ => input.to_string(),
    }
}

/// Go's `regexp.MustCompile(`[/.]+|--`).Split(input, -1)`.
fn split(input: &str) -> Vec<&str> {
    let b = input.as_bytes();
    let mut parts = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        let sep_len = if b[i] == b'/' || b[i] == b'.' {
            b[i..]
                .iter()
                .take_while(|c| **c == b'/' || **c == b'.')
                .count()
        } else if b[i..].starts_with(b"--") {
            2
        } else {
            0
        };
        if sep_len > 0 {
            parts.push(&input[start..i]);
            i += sep_len;
            start = i;
        } else {
            i += 1;
        }
    }
    parts.push(&input[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(owner: Option<&str>, ws: &str, agent: Option<&str>) -> Result<SshTarget, String> {
        Ok(SshTarget {
            owner: owner.map(str::to_string),
            workspace: ws.to_string(),
            agent: agent.map(str::to_string),
        })
    }

    /// The forms Coder's `normalizeWorkspaceInput` documents, and the host prefix/suffix
    /// flags of `coder ssh`.
    #[test]
    fn reads_targets_as_coder_does() {
        let cases: &[(&str, &str, &str, Result<SshTarget, String>)] = &[
            ("ws", "", "", t(None, "ws", None)),
            ("ws.main", "", "", t(None, "ws", Some("main"))),
            ("alice/ws", "", "", t(Some("alice"), "ws", None)),
            ("alice--ws", "", "", t(Some("alice"), "ws", None)),
            (
                "alice/ws--main",
                "",
                "",
                t(Some("alice"), "ws", Some("main")),
            ),
            (
                "alice/ws.main",
                "",
                "",
                t(Some("alice"), "ws", Some("main")),
            ),
            (
                "alice--ws--main",
                "",
                "",
                t(Some("alice"), "ws", Some("main")),
            ),
            (
                "alice--ws.main",
                "",
                "",
                t(Some("alice"), "ws", Some("main")),
            ),
            ("alice//ws", "", "", t(Some("alice"), "ws", None)),
            // The trap: without the flag, `coder.` is a workspace named coder.
            ("coder.ws", "", "", t(None, "coder", Some("ws"))),
            ("coder.ws", "coder.", "", t(None, "ws", None)),
            (
                "coder.alice--ws",
                "coder.",
                "",
                t(Some("alice"), "ws", None),
            ),
            ("coder.ws.main", "coder.", "", t(None, "ws", Some("main"))),
            (
                "coder.ws.main",
                "",
                "",
                t(Some("coder"), "ws", Some("main")),
            ),
            // A prefix the host does not have is not stripped.
            ("ws", "coder.", "", t(None, "ws", None)),
            // Suffixes are dotted labels: `.coder`, never a bare string end.
            ("ws.coder", "", "coder", t(None, "ws", None)),
            ("main.ws.coder", "", "coder", t(None, "main", Some("ws"))),
            ("wsencoder", "", "coder", t(None, "wsencoder", None)),
            ("ws.coder", "", "", t(None, "ws", Some("coder"))),
            // Four parts are taken as written: `a/b` then `.c.d`.
            ("a/b.c.d", "", "", t(Some("a"), "b", Some("c"))),
            ("a/b/c", "", "", t(Some("a"), "b", Some("c"))),
            (
                "a/b/c/d",
                "",
                "",
                Err("invalid workspace name: \"a/b/c/d\"".into()),
            ),
        ];
        for (input, prefix, suffix, want) in cases {
            assert_eq!(
                &parse(input, prefix, suffix),
                want,
                "{input:?} prefix {prefix:?} suffix {suffix:?}"
            );
        }
    }

    #[test]
    fn splits_like_gos_regexp() {
        assert_eq!(split("a"), ["a"]);
        assert_eq!(split("a/./b"), ["a", "b"]);
        assert_eq!(split("a---b"), ["a", "-b"]);
        assert_eq!(split("a--b.c"), ["a", "b", "c"]);
        assert_eq!(split(".a"), ["", "a"]);
    }
}
