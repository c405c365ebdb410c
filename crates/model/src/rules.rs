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
}
