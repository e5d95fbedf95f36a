//! A config as the command line gives it: relative paths in a config file resolved against
//! the file's folder, and `--set section.key=value` overrides applied through the config's
//! own (de)serialisation, so an unknown key is refused as it is in a file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use smartmixed_train::config::DataConfig;
use smartmixed_train::fsutil::lexically_normal;
use smartmixed_train::TrainConfig;

/// The `[data]` keys that hold paths.
const PATH_KEYS: [&str; 3] = ["dir", "file", "test_file"];

/// Makes the relative paths that `text` (the config file `path`'s own text) writes in its
/// `[data]` table relative to the file's folder: absolute, so that the run's recorded
/// config.toml names the same files from any working directory. Paths the file does not
/// write (defaults such as `data/mnist`) stay as they are, relative to the working
/// directory.
pub fn resolve_data_paths(data: &mut DataConfig, text: &str, path: &Path) -> Result<()> {
    // The text parsed before (by the caller's config type), so this parse succeeds.
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return Ok(());
    };
    let Some(written) = table.get("data").and_then(toml::Value::as_table) else {
        return Ok(());
    };
    let folder = path.parent().unwrap_or(Path::new(""));
    let folder = std::path::absolute(if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder
    })
    .with_context(|| format!("{}: cannot resolve its folder", path.display()))?;
    let resolve = |p: &Path| -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            lexically_normal(&folder.join(p))
        }
    };
    for key in PATH_KEYS.iter().filter(|k| written.contains_key(**k)) {
        match *key {
            "dir" => data.dir = resolve(&data.dir),
            "file" => data.file = data.file.as_deref().map(resolve),
            _ => data.test_file = data.test_file.as_deref().map(resolve),
        }
    }
    Ok(())
}

/// Makes every `[data]` path absolute against the working directory (the file's own
/// relative paths were resolved against its folder before): paths from `--data-dir`,
/// `--set data.file=...` and the default `data/mnist`. The run's config.toml then names
/// the files training read, so `eval --run`, `export` and `--resume` find them from any
/// working directory.
pub fn absolute_data_paths(data: &mut DataConfig) -> Result<()> {
    let absolute = |p: &Path| -> Result<PathBuf> {
        std::path::absolute(p)
            .map(|p| lexically_normal(&p))
            .with_context(|| format!("{}: cannot make the data path absolute", p.display()))
    };
    data.dir = absolute(&data.dir)?;
    data.file = data.file.as_deref().map(absolute).transpose()?;
    data.test_file = data.test_file.as_deref().map(absolute).transpose()?;
    Ok(())
}

/// One `--set KEY=VALUE`: the dotted key and the value, read as TOML (`3`, `1e-3`,
/// `[64, 32]`, `"x"`, `true`) or, when that is not TOML, as a string (`val_accuracy`,
/// `data/wine.csv`).
#[derive(Clone, Debug)]
pub struct Set {
    key: String,
    value: toml::Value,
    /// As typed, for messages.
    raw: String,
}

/// clap's parser of `--set`.
pub fn parse_set(s: &str) -> std::result::Result<Set, String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected KEY=VALUE, e.g. phase1.epochs=5"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(format!(
            "`{s}`: expected KEY=VALUE with a dotted key such as phase1.auto.threshold"
        ));
    }
    let value = value.trim();
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"));
    let parsed = match parsed {
        Some(v) => v,
        // A number TOML cannot hold would else become a string, refused as "expected
        // u64" by the field it was meant for.
        None if value
            .parse::<i128>()
            .is_ok_and(|v| i64::try_from(v).is_err()) =>
        {
            return Err(format!(
                "`{s}`: {value} is outside TOML's integers, {} to {}",
                i64::MIN,
                i64::MAX
            ));
        }
        // `.5`, `5.`, `5.e3`: a number without digits on a side of its point (other forms
        // TOML refuses, such as `007`, stay strings: a column may be named so).
        None if value.parse::<f64>().is_ok() && {
            let unsigned = value.trim_start_matches(['+', '-']);
            unsigned.starts_with('.')
                || unsigned.ends_with('.')
                || unsigned.contains(".e")
                || unsigned.contains(".E")
        } =>
        {
            return Err(format!(
                "`{s}`: {value} is not a TOML number; write it with digits on both sides of the point, e.g. 0.5 or 1e-3"
            ));
        }
        None => toml::Value::String(value.to_string()),
    };
    Ok(Set {
        key: key.to_string(),
        value: parsed,
        raw: s.to_string(),
    })
}

/// `cfg` with every `--set` applied in order. An error names the `--set` at fault and
/// what is wrong, as a file's error names the file: an unknown key, a value of the wrong
/// type, a key below a value that is not a table.
pub fn apply_sets(cfg: TrainConfig, sets: &[Set]) -> Result<TrainConfig> {
    if sets.is_empty() {
        return Ok(cfg);
    }
    let mut root = toml::Table::try_from(&cfg).context("the config cannot be written as TOML")?;
    for set in sets {
        let shown = format!("--set {}", set.raw);
        let parts: Vec<&str> = set.key.split('.').collect();
        let (last, sections) = parts.split_last().context("an empty key")?;
        let mut table = &mut root;
        for (i, part) in sections.iter().enumerate() {
            let entry = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(inner) = entry.as_table_mut() else {
                bail!(
                    "{shown}: `{}` is a value, not a section",
                    parts[..=i].join(".")
                );
            };
            table = inner;
        }
        table.insert(last.to_string(), set.value.clone());
        // Checked after each, so the error names the --set that brought it in.
        if let Err(e) = toml::Value::Table(root.clone()).try_into::<TrainConfig>() {
            bail!("{shown}: {}", e.message().trim().replace('\n', " "));
        }
    }
    Ok(toml::Value::Table(root).try_into::<TrainConfig>()?)
}

/// The `--set`s as typed, for the origin that validation errors name.
pub fn shown_sets(sets: &[Set]) -> String {
    sets.iter()
        .map(|s| format!("--set {}", s.raw))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::parse_set;

    #[test]
    fn a_set_value_parses_as_toml_else_as_a_string() {
        let v = |s: &str| parse_set(s).map(|set| set.value);
        assert_eq!(v("training.seed=7"), Ok(toml::Value::Integer(7)));
        assert_eq!(v("phase1.lr=1e-3"), Ok(toml::Value::Float(1e-3)));
        assert_eq!(
            v("data.file=data/wine.csv"),
            Ok(toml::Value::String("data/wine.csv".into()))
        );
    }

    /// u64's top half was passed on as a string and refused as "expected u64".
    #[test]
    fn a_number_toml_cannot_hold_is_refused_as_such() {
        let e = parse_set("training.seed=18446744073709551615").unwrap_err();
        assert!(
            e.contains("outside TOML's integers") && e.contains("9223372036854775807"),
            "{e}"
        );
        let e = parse_set("training.seed=-9223372036854775809").unwrap_err();
        assert!(e.contains("outside TOML's integers"), "{e}");
        for value in [".5", "5.", "+.5e3"] {
            let e = parse_set(&format!("phase1.lr={value}")).unwrap_err();
            assert!(e.contains("is not a TOML number"), "{value}: {e}");
        }
        assert!(parse_set("training.seed=9223372036854775807").is_ok());
        // Forms TOML refuses that name things, not numbers, stay strings (a column `007`).
        for value in ["007", "-01"] {
            let v = parse_set(&format!("data.label={value}")).unwrap().value;
            assert_eq!(v, toml::Value::String(value.into()));
        }
    }
}
