//! The one error type of `smartmixed-core`.

/// Everything that can go wrong in core: unknown activations, invalid configs and
/// invalid manifests. (The config, sweep and read-config variants are raised by
/// `smartmixed-train`'s config and sweep modules; they stay here so a config error keeps
/// one type.)
/// `#[non_exhaustive]`: new failure modes are added without breaking callers' matches.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A name that no linked crate registered.
    #[error("unknown activation `{name}`; registered activations: {}", registered.join(", "))]
    UnknownActivation {
        name: String,
        registered: Vec<&'static str>,
    },
    /// Two linked crates registered the same name.
    #[error("activation `{name}` is registered twice, by `{first}` and by `{second}`; rename one")]
    DuplicateActivation {
        name: String,
        first: &'static str,
        second: &'static str,
    },
    /// A config that does not parse or does not validate. `origin` is the file (or a label
    /// for in-memory text) and `field` the dotted TOML path at fault.
    #[error("{origin}: {field}: {message}")]
    Config {
        origin: String,
        field: String,
        message: String,
    },
    /// An exported model's manifest that does not parse or does not validate; `field` is
    /// the dotted path at fault.
    #[error("invalid manifest: {field}: {message}")]
    Manifest { field: String, message: String },
    /// A sweep directory that cannot be merged or read as a sweep; `path` names the
    /// directory or file at fault.
    #[error("{}: {message}", path.display())]
    Sweep {
        path: std::path::PathBuf,
        message: String,
    },
    /// A config file that cannot be read.
    #[error("{path}: cannot read config: {source}")]
    ReadConfig {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with core's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
