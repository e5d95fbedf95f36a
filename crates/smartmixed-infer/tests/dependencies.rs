//! The runtime depends only on what it runs: `cargo tree` of `smartmixed-infer`'s normal
//! dependencies is exactly the list below, so a training or serving crate (csv, dfdx,
//! rayon, clap, axum, tokio, ...) that creeps into core or the runtime fails here, and so
//! does core's `testing` feature being switched on for an embedder.

use std::collections::BTreeSet;
use std::process::Command;

/// Every crate an embedder of `smartmixed-infer` compiles: gemm and its kernels, safetensors,
/// and core's serde, toml (the manifest), serde_json (the tensor file's header), inventory
/// (the registry) and thiserror. A lock-file update that renames a transitive crate of these
/// changes the list deliberately; a new direct dependency needs a reason.
const ALLOWED: [&str; 47] = [
    "bitflags",
    "bytemuck",
    "cfg-if",
    "dyn-stack",
    "dyn-stack-macros",
    "equivalent",
    "gemm",
    "gemm-c32",
    "gemm-c64",
    "gemm-common",
    "gemm-f32",
    "gemm-f64",
    "hashbrown",
    "indexmap",
    "inventory",
    "itoa",
    "libm",
    "memchr",
    "num-complex",
    "num-traits",
    "once_cell",
    "paste",
    "proc-macro2",
    "pulp",
    "pulp-wasm-simd-flag",
    "quote",
    "raw-cpuid",
    "reborrow",
    "safetensors",
    "seq-macro",
    "serde",
    "serde_core",
    "serde_derive",
    "serde_json",
    "serde_spanned",
    "smartmixed-core",
    "smartmixed-infer",
    "syn",
    "thiserror",
    "thiserror-impl",
    "toml",
    "toml_datetime",
    "toml_edit",
    "toml_write",
    "unicode-ident",
    "winnow",
    "zmij",
];

/// Crates that belong to the trainer, the sweep or the CLI and must never reach the runtime
/// (named separately so the failure says which one came in).
const FORBIDDEN: [&str; 10] = [
    "csv",
    "dfdx",
    "rayon",
    "indicatif",
    "clap",
    "axum",
    "tokio",
    "hyper",
    "flate2",
    "png",
];

/// `(crate name, its enabled features)` for every line of
/// `cargo tree -p smartmixed-infer -e normal --prefix none --format "{p} {f}"`.
fn runtime_tree() -> Vec<(String, String)> {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--manifest-path",
            manifest,
            "-p",
            "smartmixed-infer",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p} | {f}",
        ])
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("cargo tree prints UTF-8")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (package, features) = l.split_once(" | ").unwrap_or((l, ""));
            let name = package.split_whitespace().next().unwrap_or("").to_string();
            let features = features.trim_end_matches("(*)").trim().to_string();
            (name, features)
        })
        .collect()
}

#[test]
fn runtime_depends_only_on_what_it_runs() {
    let tree = runtime_tree();
    let names: BTreeSet<&str> = tree.iter().map(|(n, _)| n.as_str()).collect();
    let forbidden: Vec<&&str> = FORBIDDEN.iter().filter(|f| names.contains(**f)).collect();
    assert!(
        forbidden.is_empty(),
        "smartmixed-infer depends on {forbidden:?}"
    );
    let allowed: BTreeSet<&str> = ALLOWED.into_iter().collect();
    let extra: Vec<&&str> = names.difference(&allowed).collect();
    let gone: Vec<&&str> = allowed.difference(&names).collect();
    assert!(
        extra.is_empty() && gone.is_empty(),
        "smartmixed-infer's dependencies changed: new {extra:?}, no longer there {gone:?}"
    );
    let core_features: Vec<&str> = tree
        .iter()
        .filter(|(n, _)| n == "smartmixed-core")
        .flat_map(|(_, f)| f.split(','))
        .collect();
    assert!(
        !core_features.contains(&"testing"),
        "smartmixed-core's `testing` feature is on for the runtime: {core_features:?}"
    );
}
