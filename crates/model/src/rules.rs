//! Rules of the values users give, in one place: `decide` refuses what breaks them, so the API,
//! the automations and the simulators meet the same rules (a handler parses and forwards; it
//! does not check these again). Each refusal names its field.

/// Longest `source_prefix` (S3 keys are at most 1,024 bytes).
pub const SOURCE_PREFIX_CHARS_MAX: usize = 1024;
/// Longest `file_pattern`.
pub const FILE_PATTERN_CHARS_MAX: usize = 512;

/// A value that breaks a rule: the field and a sentence for the 422.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub field: &'static str,
    pub message: String,
}

impl RuleError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        RuleError { field, message: message.into() }
    }
}

/// Free text: at most `max` characters, no NUL or other control characters.
pub fn text(field: &'static str, v: &str, max: usize) -> Result<(), RuleError> {
    if v.chars().count() > max {
        return Err(RuleError::new(field, format!("must be at most {max} characters")));
    }
    if v.chars().any(char::is_control) {
        return Err(RuleError::new(field, "must not contain NUL or other control characters"));
    }
    Ok(())
}

/// An import's `source_prefix`: a string prefix of object keys.
pub fn source_prefix(v: &str) -> Result<(), RuleError> {
    text("source_prefix", v, SOURCE_PREFIX_CHARS_MAX)
}

/// An import job's `file_pattern`: text, and a glob [`glob_matcher`] compiles.
pub fn file_pattern(v: &str) -> Result<(), RuleError> {
    text("file_pattern", v, FILE_PATTERN_CHARS_MAX)?;
    glob_matcher(v).map(|_| ()).map_err(|e| RuleError::new("file_pattern", e))
}

/// The matcher of a pattern (`None`: everything matches): case-insensitive, `*` crosses `/`,
/// `{a,b}` alternatives, backslash escapes. The one definition imports, browses and
/// automations use.
pub fn glob_matcher(pattern: &str) -> Result<Option<globset::GlobMatcher>, String> {
    let p = pattern.trim();
    if p.is_empty() || p == "*" || p == "**" {
        return Ok(None);
    }
    let glob = globset::GlobBuilder::new(p)
        .literal_separator(false)
        .case_insensitive(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Some(glob.compile_matcher()))
}

/// A bucket, container or account name: `min`–`max` characters from `allowed`, starting and
/// ending with a letter or digit.
fn name_rule(field: &'static str, v: &str, min: usize, max: usize, allowed: fn(char) -> bool) -> Result<(), RuleError> {
    let n = v.chars().count();
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if n < min || n > max || !v.chars().all(allowed) || !edge_ok(v.chars().next()) || !edge_ok(v.chars().last()) {
        return Err(RuleError::new(
            field,
            format!(
                "must be {min}–{max} characters of letters, digits, dots, hyphens or underscores, starting and ending with a letter or digit"
            ),
        ));
    }
    Ok(())
}

fn s3_bucket_char(c: char) -> bool {
    // Legacy us-east-1 buckets may hold capitals and underscores; nothing else is an S3 name.
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

fn gcs_bucket_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
}

/// The rules of a connector's location, by provider (presence is the handler's parsing; the
/// shapes are checked here, in the connector's decision).
pub fn connector_location(provider: crate::Provider, loc: &crate::ConnectorLocation) -> Result<(), RuleError> {
    use crate::Provider;
    match provider {
        Provider::S3 => {
            if let Some(b) = &loc.bucket {
                name_rule("bucket", b, 3, 255, s3_bucket_char)?;
            }
            if let Some(r) = &loc.region
                && (r.is_empty()
                    || r.len() > 64
                    || !r.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
            {
                return Err(RuleError::new(
                    "region",
                    "must be an AWS region name such as us-east-1 (lower-case letters, digits, hyphens)",
                ));
            }
        }
        Provider::Gcs => {
            if let Some(b) = &loc.bucket {
                name_rule("bucket", b, 3, 222, gcs_bucket_char)?;
            }
            if let Some(p) = &loc.gcp_project_id {
                text("gcp_project_id", p, 128)?;
            }
        }
        Provider::Azure => {
            if let Some(c) = &loc.container
                && (c.len() < 3
                    || c.len() > 63
                    || !c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
            {
                return Err(RuleError::new("container", "must be 3–63 lower-case letters, digits or hyphens"));
            }
            if let Some(a) = &loc.storage_account {
                name_rule("storage_account", a, 3, 24, |c| c.is_ascii_lowercase() || c.is_ascii_digit())?;
            }
            for (field, v) in [("tenant_id", &loc.tenant_id), ("client_id", &loc.client_id)] {
                if let Some(v) = v {
                    text(field, v, 128)?;
                }
            }
        }
        Provider::Local => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_patterns_are_bounded_text_and_patterns_compile() {
        assert!(source_prefix("videos/2024/").is_ok());
        assert_eq!(source_prefix(&"a".repeat(1025)).unwrap_err().field, "source_prefix");
        assert!(source_prefix("a\u{0}b").is_err());
        assert!(file_pattern("*.{mp4,mov}").is_ok());
        assert_eq!(file_pattern("*.{mp4").unwrap_err().field, "file_pattern");
        assert!(file_pattern(&"*".repeat(513)).is_err());
        assert!(glob_matcher("*.MP4").unwrap().unwrap().is_match("a/b/c.mp4"));
        assert!(glob_matcher("*").unwrap().is_none());
    }

    #[test]
    fn connector_locations_follow_each_provider_s_naming_rules() {
        use crate::{ConnectorLocation, Provider};
        let loc = |f: fn(&mut ConnectorLocation)| {
            let mut l = ConnectorLocation::default();
            f(&mut l);
            l
        };
        assert!(connector_location(Provider::S3, &loc(|l| l.bucket = Some("Legacy_Bucket".into()))).is_ok());
        assert_eq!(
            connector_location(Provider::S3, &loc(|l| l.bucket = Some("a".into()))).unwrap_err().field,
            "bucket"
        );
        assert_eq!(
            connector_location(Provider::S3, &loc(|l| l.region = Some("US East".into()))).unwrap_err().field,
            "region"
        );
        assert!(connector_location(Provider::Gcs, &loc(|l| l.bucket = Some("Upper".into()))).is_err());
        assert_eq!(
            connector_location(Provider::Azure, &loc(|l| l.container = Some("a_b".into()))).unwrap_err().field,
            "container"
        );
        assert!(connector_location(Provider::Azure, &loc(|l| l.storage_account = Some("acct1".into()))).is_ok());
    }
}
