//! Every config shipped in `configs/` parses and validates: a sweep config (a `[sweep]`
//! table) as a sweep with every cell's config, any other as a training config.

use std::path::Path;

use smartmixed_train::{SweepConfig, TrainConfig, Transition};

#[test]
fn every_shipped_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if text.lines().any(|l| l.trim() == "[sweep]") {
            SweepConfig::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        } else {
            TrainConfig::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        }
        seen += 1;
    }
    assert!(seen >= 7, "{seen} configs");
}

/// The evidence sweep compares the paper's schedule with the automatic one, and nothing
/// else differs between the two methods' cells.
#[test]
fn the_auto_versus_fixed_sweeps_differ_only_in_the_schedule() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in [
        "configs/auto-vs-fixed.toml",
        "configs/auto-vs-fixed-short.toml",
    ] {
        let sweep = SweepConfig::from_file(&root.join(name)).unwrap();
        assert_eq!(sweep.sweep.methods, ["smartmixed", "smartmixed-auto"]);
        assert_eq!(sweep.sweep.seeds, [0, 1, 2]);
        let cells = sweep.cells();
        let (paper, auto) = (sweep.cell_config(&cells[0]), sweep.cell_config(&cells[3]));
        assert_eq!((cells[0].seed, cells[3].seed), (0, 0));
        assert_eq!(paper.phase1.transition, Transition::Fixed);
        assert_eq!(auto.phase1.transition, Transition::Auto);
        let mut changed = paper.differences(&auto);
        changed.sort();
        assert_eq!(
            changed,
            ["phase1.transition", "training.patience"],
            "{name}"
        );
    }
}
