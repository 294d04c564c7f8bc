//! `.env` files: read into the environment at start, and updated in place by `env --write`.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// Parses `KEY=value` lines (with optional `export `, quotes and `#` comments).
pub fn parse(text: &str) -> Vec<(String, String)> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<(String, String)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let line = line.strip_prefix("export ").unwrap_or(line);
    let (key, value) = line.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let value = value.trim();
    let value = match value.chars().next() {
        Some(quote @ ('"' | '\'')) => value[1..].split(quote).next().unwrap_or("").to_owned(),
        _ => value.split(" #").next().unwrap_or("").trim().to_owned(),
    };
    Some((key.to_owned(), value))
}

/// The variables of `.env` in the working directory (empty when there is none).
pub fn from_working_directory() -> HashMap<String, String> {
    fs::read_to_string(".env")
        .map(|text| parse(&text).into_iter().collect())
        .unwrap_or_default()
}

/// Sets `assignments` in the env file at `path`, keeping every other line and comment. Keys
/// already present are replaced where they stand; new ones are appended. A new file is created
/// 0600; the write is atomic (temp file, rename) and keeps an existing file's permissions.
pub fn write(path: &Path, assignments: &[(&str, &str)]) -> std::io::Result<()> {
    let existing = match fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut remaining: Vec<(&str, &str)> = assignments.to_vec();
    let mut out = String::new();
    for line in existing.as_deref().unwrap_or("").lines() {
        let key = parse_line(line).map(|(k, _)| k);
        match key.and_then(|k| remaining.iter().position(|(name, _)| *name == k)) {
            Some(index) => {
                let (name, value) = remaining.remove(index);
                let export = if line.trim_start().starts_with("export ") {
                    "export "
                } else {
                    ""
                };
                out.push_str(&format!("{export}{name}=\"{value}\"\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (name, value) in remaining {
        out.push_str(&format!("{name}=\"{value}\"\n"));
    }
    let mode = fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0o600);
    let directory = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("env");
    let temp = directory.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(out.as_bytes())?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let parsed = parse("# c\nA=1\nexport B=\"two words\"\nC='x#y'\nD=plain # note\nnot a line\n");
        assert_eq!(
            parsed,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x#y".into()),
                ("D".into(), "plain".into())
            ]
        );
    }
}
