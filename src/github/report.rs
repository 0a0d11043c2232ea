//! Reporting a plan on a pull request: one comment (in parts when it is too long), updated in
//! place on every run, and a check run with a conclusion.
//!
//! The comment is found again by a hidden marker in comments written by a bot account, so a
//! human quoting the marker does not get their comment overwritten.

use super::GitHubError;
use super::client::{COMMENT_LIMIT, IssueComment, RepoClient};
use crate::ci::report::Report;

const MARKER_PREFIX: &str = "<!-- terrarium:plan";

/// Splits Markdown into parts of at most `limit` characters each, marker and headers included.
/// A part that ends inside a fenced code block closes it and the next part reopens it with the
/// same opener; `<details>` blocks are closed and reopened the same way, so every part renders
/// on its own.
pub(crate) fn split_markdown(body: &str, limit: usize) -> Vec<String> {
    // Room for the marker, the part header and the closers added at a cut.
    const RESERVE: usize = 400;
    let budget = limit.saturating_sub(RESERVE).max(100);
    let mut parts: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut current_len = 0usize;
    let mut fence: Option<String> = None;
    let mut details = 0usize;

    let close = |fence: &Option<String>, details: usize| {
        let mut s = String::new();
        if fence.is_some() {
            s.push_str("```\n");
        }
        for _ in 0..details {
            s.push_str("\n</details>\n");
        }
        s
    };
    let reopen = |fence: &Option<String>, details: usize| {
        let mut s = String::new();
        for _ in 0..details {
            s.push_str("<details><summary>Output (continued)</summary>\n\n");
        }
        if let Some(opener) = fence {
            s.push_str(opener);
            s.push('\n');
        }
        s
    };

    for line in pieces(body, budget / 2) {
        let len = line.chars().count() + 1;
        if current_len + len > budget && current_len > 0 {
            current.push_str(&close(&fence, details));
            parts.push(std::mem::take(&mut current));
            current = reopen(&fence, details);
            current_len = current.chars().count();
        }
        current.push_str(&line);
        current.push('\n');
        current_len += len;
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(trimmed.to_string()),
            };
        } else if fence.is_none() {
            details += trimmed.matches("<details").count();
            details = details.saturating_sub(trimmed.matches("</details>").count());
        }
    }
    if !current.is_empty() || parts.is_empty() {
        parts.push(current);
    }
    let n = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let header = if n > 1 {
                format!(
                    "{MARKER_PREFIX} part {}/{n} -->\n_Part {} of {n}_\n\n",
                    i + 1,
                    i + 1
                )
            } else {
                format!("{MARKER_PREFIX} part 1/1 -->\n")
            };
            format!("{header}{p}")
        })
        .collect()
}

/// Lines, with any line longer than `max` characters broken into pieces.
fn pieces(body: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    for line in body.lines() {
        let chars: Vec<char> = line.chars().collect();
        if chars.len() <= max {
            out.push(line.to_string());
        } else {
            for chunk in chars.chunks(max) {
                out.push(chunk.iter().collect());
            }
        }
    }
    out
}

/// Part number of one of our comments, if it is one.
fn part_of(c: &IssueComment) -> Option<usize> {
    let body = c.body.as_deref()?;
    let is_bot = c.user.as_ref().is_some_and(|u| u.kind == "Bot");
    if !is_bot || !body.starts_with(MARKER_PREFIX) {
        return None;
    }
    let rest = body[MARKER_PREFIX.len()..].trim_start();
    let spec = rest.strip_prefix("part ")?.split_whitespace().next()?;
    spec.split('/').next()?.parse().ok()
}

/// The pull request comment: the CI summary (`ci::markdown`), with the commit it planned.
pub(crate) fn comment_markdown(summary: &str, head_sha: &str) -> String {
    let mut md = summary.to_string();
    md.push_str(&format!(
        "\n---\n_Planned by Terrarium at commit `{}`._\n",
        head_sha.chars().take(12).collect::<String>()
    ));
    md
}

/// Writes the comment: existing parts are edited in place, missing ones created, surplus ones
/// (from an earlier, longer plan) deleted. Returns the comment ids in part order.
pub(crate) async fn upsert_comment(
    client: &RepoClient,
    number: u64,
    markdown: &str,
) -> Result<Vec<u64>, GitHubError> {
    let parts = split_markdown(markdown, COMMENT_LIMIT);
    let mut ours: Vec<(usize, u64)> = client
        .issue_comments(number)
        .await?
        .iter()
        .filter_map(|c| part_of(c).map(|p| (p, c.id)))
        .collect();
    ours.sort();
    let mut ids = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        match ours.get(i) {
            Some((_, id)) => {
                client.update_comment(*id, part).await?;
                ids.push(*id);
            }
            None => ids.push(client.create_comment(number, part).await?),
        }
    }
    for (_, id) in ours.iter().skip(parts.len()) {
        client.delete_comment(*id).await?;
    }
    Ok(ids)
}

/// `(conclusion, title)` for a plan's check run.
pub(crate) fn check_outcome(report: &Report) -> (&'static str, String) {
    let (conclusion, title) = plan_outcome(report);
    if report.sandbox.is_empty() {
        (conclusion, title)
    } else {
        // The title is what the checks list shows: a weaker sandbox must be visible there too.
        (conclusion, format!("{title} (sandbox not strict)"))
    }
}

fn plan_outcome(report: &Report) -> (&'static str, String) {
    let failed = report.dirs.iter().filter(|d| !d.ok).count();
    if failed > 0 {
        return (
            "failure",
            format!("Plan failed in {failed} director{}", plural(failed)),
        );
    }
    let sum = |k: &str| {
        report
            .dirs
            .iter()
            .filter_map(|d| d.counts[k].as_u64())
            .sum::<u64>()
    };
    if report.dirs.iter().any(|d| d.changes) {
        (
            "success",
            format!(
                "{} to add, {} to change, {} to destroy",
                sum("add"),
                sum("change"),
                sum("destroy")
            ),
        )
    } else if report.dirs.is_empty() {
        ("success", "No Terraform directories changed".into())
    } else {
        ("success", "No changes".into())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "y" } else { "ies" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::github::client::{CommentUser, cut};

    fn fences_balanced(s: &str) -> bool {
        s.lines()
            .filter(|l| l.trim_start().starts_with("```"))
            .count()
            % 2
            == 0
    }

    #[test]
    fn short_bodies_are_one_part() {
        let parts = split_markdown("# hi\n\n```text\nx\n```\n", COMMENT_LIMIT);
        assert_eq!(parts.len(), 1);
        assert!(parts[0].starts_with("<!-- terrarium:plan part 1/1 -->"));
        assert!(parts[0].contains("```text\nx\n```"));
    }

    #[test]
    fn long_output_splits_with_balanced_fences_and_details() {
        let mut body =
            String::from("## Terraform plan\n\n<details><summary>Output</summary>\n\n```text\n");
        for i in 0..20_000 {
            body.push_str(&format!(
                "  + resource line number {i} with some padding text\n"
            ));
        }
        body.push_str("```\n\n</details>\n\nend\n");
        let parts = split_markdown(&body, COMMENT_LIMIT);
        assert!(parts.len() > 10, "{}", parts.len());
        for (i, p) in parts.iter().enumerate() {
            assert!(
                p.chars().count() <= COMMENT_LIMIT,
                "part {i}: {}",
                p.chars().count()
            );
            assert!(fences_balanced(p), "part {i} has unbalanced fences");
            assert_eq!(
                p.matches("<details").count(),
                p.matches("</details>").count(),
                "part {i}"
            );
            assert!(p.starts_with(&format!(
                "<!-- terrarium:plan part {}/{} -->",
                i + 1,
                parts.len()
            )));
        }
        // Nothing lost: every line is somewhere.
        let all = parts.concat();
        assert!(all.contains("resource line number 0 "));
        assert!(all.contains("resource line number 19999 "));
        assert!(parts.last().is_some_and(|p| p.contains("end")));
    }

    #[test]
    fn a_single_huge_line_is_broken_up() {
        let body = format!("```\n{}\n```\n", "x".repeat(200_000));
        let parts = split_markdown(&body, COMMENT_LIMIT);
        assert!(parts.len() >= 4);
        assert!(
            parts
                .iter()
                .all(|p| p.chars().count() <= COMMENT_LIMIT && fences_balanced(p))
        );
    }

    #[test]
    fn only_bot_comments_with_the_marker_are_ours() {
        let c = |body: &str, kind: &str| IssueComment {
            id: 1,
            body: Some(body.into()),
            user: Some(CommentUser { kind: kind.into() }),
        };
        assert_eq!(
            part_of(&c("<!-- terrarium:plan part 2/3 -->\nx", "Bot")),
            Some(2)
        );
        assert_eq!(
            part_of(&c("<!-- terrarium:plan part 2/3 -->\nx", "User")),
            None
        );
        assert_eq!(part_of(&c("hello", "Bot")), None);
    }

    #[test]
    fn cut_marks_truncation() {
        assert_eq!(cut("abc", 5), "abc");
        let c = cut(&"y".repeat(100), 50);
        assert!(c.chars().count() <= 50 && c.ends_with("(truncated)"));
    }
}
