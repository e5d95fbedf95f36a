//! TOML parse errors in one line: shared by the manifest (here) and the trainer's configs.

/// Where a TOML parse error is (`line N`, or `toml` when it has no position) and what it
/// says, in one line and never empty.
pub fn toml_error(text: &str, e: &toml::de::Error) -> (String, String) {
    let field = match e.span() {
        Some(s) => {
            let before = text.get(..s.start.min(text.len())).unwrap_or(text);
            format!("line {}", before.matches('\n').count() + 1)
        }
        None => "toml".to_string(),
    };
    let message = e.message().trim().replace('\n', " ");
    let message = if message.is_empty() {
        "invalid TOML (cut short?)".to_string()
    } else {
        message
    };
    (field, message)
}
