//! The report's figures from a real run, read back independently: the SVG's text (titles,
//! the selected epoch, layer widths, one legend) and the PNG decoded by the png crate.

mod common;

use std::path::Path;

use common::{cli, summary_json, train_small};

/// The text of every `<text>` element of an SVG, trimmed.
fn texts(svg: &Path) -> Vec<String> {
    let svg = std::fs::read_to_string(svg).unwrap();
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            Some(
                t.split_once('>')?
                    .1
                    .split_once("</text>")?
                    .0
                    .trim()
                    .to_string(),
            )
        })
        .collect()
}

/// Width and height of a PNG, decoded by the png crate.
fn png_size(path: &Path) -> (u32, u32) {
    let mut reader = png::Decoder::new(std::fs::File::open(path).unwrap())
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    (info.width, info.height)
}

#[test]
fn run_figures_name_the_phase_the_selected_epoch_and_the_layer_widths() {
    let tmp = tempfile::tempdir().unwrap();
    // Hidden layers of 16 and 8 neurons; three phase-1 epochs so the selection matters.
    let (o, run) = train_small(tmp.path(), |c| c.replacen("epochs = 1", "epochs = 3", 1));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = cli(&["report", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = run.join("report");
    let best = summary_json(&run)["phases"][0]["best_epoch"]
        .as_u64()
        .unwrap();
    let selected = format!("selected (epoch {best})");

    let fig1 = texts(&report.join("fig1-phase1-loss.svg"));
    assert!(
        fig1.contains(&"Training and validation loss, phase 1 (selective)".to_string()),
        "{fig1:?}"
    );
    assert!(
        fig1.iter().any(|t| t.contains("not directly comparable")),
        "{fig1:?}"
    );
    assert!(fig1.contains(&selected), "{fig1:?}");
    let fig2 = texts(&report.join("fig2-phase2-loss.svg"));
    assert!(
        fig2.contains(&"Training and validation loss, phase 2 (mixed network)".to_string()),
        "{fig2:?}"
    );

    // Fig. 3: phase 1's selected epoch, not its last, and each layer's width.
    let fig3 = texts(&report.join("fig3-activation-shares.svg"));
    let title =
        format!("Activation shares per hidden layer at the selected phase-1 epoch (epoch {best})");
    assert!(fig3.contains(&title), "{fig3:?}");
    assert!(
        fig3.contains(&"1 (16)".to_string()) && fig3.contains(&"2 (8)".to_string()),
        "{fig3:?}"
    );

    // Fig. 3b: one legend for both panels, the selected epoch marked, widths in titles.
    let fig3b = texts(&report.join("fig3b-shares-over-epochs.svg"));
    assert_eq!(
        fig3b.iter().filter(|t| *t == "relu").count(),
        1,
        "{fig3b:?}"
    );
    assert!(fig3b.contains(&selected), "{fig3b:?}");
    assert!(
        fig3b.contains(&"layer 1 (16)".to_string()) && fig3b.contains(&"layer 2 (8)".to_string()),
        "{fig3b:?}"
    );

    assert_eq!(png_size(&report.join("fig1-phase1-loss.png")), (900, 560));
    assert_eq!(
        png_size(&report.join("fig3-activation-shares.png")),
        (900, 560)
    );
    // Two panels side by side plus the legend column and the title.
    assert_eq!(
        png_size(&report.join("fig3b-shares-over-epochs.png")),
        (2 * 600 + 170, 380 + 40)
    );
}
