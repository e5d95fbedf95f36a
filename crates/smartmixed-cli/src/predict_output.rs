//! `predict`'s answers as a table: text lines, CSV (the csv crate) or JSON lines
//! (serde_json), with the best class, the top K and every probability on request.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use smartmixed_infer::Prediction;

use crate::shown;

/// The table's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Csv,
    Jsonl,
}

/// What the table holds besides the best class.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub format: Format,
    /// The K most probable classes per row.
    pub top_k: Option<usize>,
    /// Every class's probability.
    pub probabilities: bool,
    /// Text lines name their file when there are several.
    pub several_inputs: bool,
}

/// One row's answer: item `item` (an image of an IDX file, a CSV data row, 0 for a single
/// image) of file `input`.
pub struct Answer<'a> {
    pub input: &'a Path,
    /// "image" or "row", as text lines name items.
    pub what: &'static str,
    pub item: usize,
    pub prediction: Prediction,
}

/// One class of a row's top K.
#[derive(Serialize)]
struct Ranked<'a> {
    class: usize,
    name: &'a str,
    probability: f32,
}

/// A JSON line.
#[derive(Serialize)]
struct Line<'a> {
    input: String,
    item: usize,
    class: usize,
    name: &'a str,
    probability: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    top: Option<Vec<Ranked<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: Option<&'a [f32]>,
}

/// The `k` most probable classes of `p`, most probable first: `p.class` (the largest
/// logit, which eval counts) leads, even where rounding gave another class the same
/// probability; the rest by probability, ties in class order.
fn top(p: &Prediction, k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..p.probabilities.len())
        .filter(|&c| c != p.class)
        .collect();
    order.sort_by(|&a, &b| p.probabilities[b].total_cmp(&p.probabilities[a]));
    order.insert(0, p.class);
    order.truncate(k);
    order
}

/// The table of `answers` in `shape`; `names` are the model's class names.
pub fn render(answers: &[Answer], names: &[String], shape: Shape) -> Result<Vec<u8>> {
    match shape.format {
        Format::Text => Ok(text(answers, names, shape).into_bytes()),
        Format::Csv => csv(answers, names, shape),
        Format::Jsonl => jsonl(answers, names, shape),
    }
}

/// One line per row, as `predict` has always printed them (names made safe to print).
fn text(answers: &[Answer], names: &[String], shape: Shape) -> String {
    let names: Vec<String> = names.iter().map(|n| shown(n)).collect();
    let mut out = String::new();
    for a in answers {
        let p = &a.prediction;
        let probs: Vec<String> = p
            .probabilities
            .iter()
            .zip(&names)
            .map(|(v, name)| format!("{name}:{v:.4}"))
            .collect();
        if shape.several_inputs {
            out.push_str(&format!("{}: ", shown(&a.input.display().to_string())));
        }
        out.push_str(&format!(
            "{} {}: class {} (p = {:.4}); probabilities {}",
            a.what,
            a.item,
            names[p.class],
            p.probabilities[p.class],
            probs.join(" ")
        ));
        if let Some(k) = shape.top_k {
            let best: Vec<String> = top(p, k)
                .iter()
                .map(|&c| format!("{}:{:.4}", names[c], p.probabilities[c]))
                .collect();
            out.push_str(&format!("; top {k}: {}", best.join(" ")));
        }
        out.push('\n');
    }
    out
}

fn csv(answers: &[Answer], names: &[String], shape: Shape) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = ["input", "item", "class", "name", "probability"]
        .map(String::from)
        .to_vec();
    for r in 1..=shape.top_k.unwrap_or(0) {
        header.extend(["class", "name", "probability"].map(|c| format!("top{r}_{c}")));
    }
    if shape.probabilities {
        header.extend(names.iter().map(|n| format!("p_{n}")));
    }
    w.write_record(&header).context("cannot write CSV")?;
    for a in answers {
        let p = &a.prediction;
        let mut record = vec![
            a.input.display().to_string(),
            a.item.to_string(),
            p.class.to_string(),
            names[p.class].clone(),
            p.probabilities[p.class].to_string(),
        ];
        for c in top(p, shape.top_k.unwrap_or(0)) {
            record.extend([
                c.to_string(),
                names[c].clone(),
                p.probabilities[c].to_string(),
            ]);
        }
        if shape.probabilities {
            record.extend(p.probabilities.iter().map(f32::to_string));
        }
        w.write_record(&record).context("cannot write CSV")?;
    }
    w.into_inner().context("cannot write CSV")
}

fn jsonl(answers: &[Answer], names: &[String], shape: Shape) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for a in answers {
        let p = &a.prediction;
        let line = Line {
            input: a.input.display().to_string(),
            item: a.item,
            class: p.class,
            name: &names[p.class],
            probability: p.probabilities[p.class],
            top: shape.top_k.map(|k| {
                top(p, k)
                    .into_iter()
                    .map(|c| Ranked {
                        class: c,
                        name: &names[c],
                        probability: p.probabilities[c],
                    })
                    .collect()
            }),
            probabilities: shape.probabilities.then_some(&p.probabilities[..]),
        };
        serde_json::to_writer(&mut out, &line).context("cannot write JSON")?;
        out.push(b'\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_most_probable_first_with_ties_in_class_order() {
        let p = Prediction {
            class: 1,
            probabilities: vec![0.2, 0.3, 0.2, 0.3],
        };
        assert_eq!(top(&p, 4), [1, 3, 0, 2]);
        assert_eq!(top(&p, 2), [1, 3]);
        // Probabilities rounded level, logits not: the class stays first.
        let p = Prediction::from_logits(&[0.1, 0.1f32.next_up()]);
        assert_eq!(p.probabilities[0], p.probabilities[1]);
        assert_eq!((p.class, top(&p, 2)), (1, vec![1, 0]));
    }
}
