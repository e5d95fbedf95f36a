//! `--precision` on eval, predict and inspect: bf16 answers next to f32's, named.

mod common;

use common::*;

#[test]
fn bf16_eval_reports_f32s_accuracy_and_the_share_of_equal_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model, data) = small_model(tmp.path());
    let f32_out = cli_ok(&[
        "eval".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ]);
    let bf16_out = cli_ok(&[
        "eval".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--precision".as_ref(),
        "bf16".as_ref(),
    ]);
    assert!(!f32_out.contains("precision"), "{f32_out}");
    // The f32 accuracy the bf16 run prints is the f32 run's own.
    let exact = percent_after(&f32_out, "test accuracy:");
    assert_eq!(
        percent_after(&bf16_out, "f32 test accuracy"),
        exact,
        "{bf16_out}"
    );
    let agree = percent_after(&bf16_out, "points); ");
    assert!((90.0..=100.0).contains(&agree), "{bf16_out}");
    assert!(bf16_out.contains("\nbf16: "), "{bf16_out}");

    let inspect = cli_ok(&[
        "inspect".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--precision".as_ref(),
        "bf16".as_ref(),
    ]);
    assert!(
        inspect.contains("precision bf16; kernel on this CPU: bf16: "),
        "{inspect}"
    );

    let bad = cli(&[
        "inspect",
        "--model",
        model.to_str().unwrap(),
        "--precision",
        "int4",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("int4") && err.contains("bf16"), "{err}");
}
