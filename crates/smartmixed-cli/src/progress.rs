//! Training progress: an indicatif bar per epoch on a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use smartmixed_core::Phase;
use smartmixed_train::rundir::EpochRecord;
use smartmixed_train::{PhaseSummary, Progress};

/// Shows batches, running loss and samples/s, then a line per epoch.
pub struct Reporter {
    terminal: bool,
    bar: Option<ProgressBar>,
    phase: String,
    epochs: usize,
    batches: usize,
}

impl Reporter {
    pub fn new() -> Self {
        Self {
            // The bar draws on stderr; plain lines when either stream is redirected.
            terminal: std::io::stdout().is_terminal() && std::io::stderr().is_terminal(),
            bar: None,
            phase: String::new(),
            epochs: 0,
            batches: 0,
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Reporter {
    fn phase_started(&mut self, phase: Phase, epochs: usize, batches: usize) {
        self.phase = phase.to_string();
        self.epochs = epochs;
        self.batches = batches;
    }

    fn batch(&mut self, epoch: usize, batch: usize, loss: f64, samples_per_second: f64) {
        if !self.terminal {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(self.batches as u64);
            if let Ok(style) =
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} batches {msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        bar.set_prefix(format!("{} epoch {epoch}/{}", self.phase, self.epochs));
        bar.set_position(batch as u64);
        bar.set_message(format!(
            "loss {loss:.4} · {samples_per_second:.0} samples/s"
        ));
    }

    fn epoch(&mut self, r: &EpochRecord, choices: Option<&[Vec<usize>]>) {
        self.finish();
        let mut line = format!(
            "{} epoch {}/{}: train loss {:.4}, val loss {:.4}, val acc {:.2}%, {:.1} s, {:.0} samples/s",
            r.phase,
            r.epoch,
            self.epochs,
            r.train_loss,
            r.validation_loss,
            100.0 * r.validation_accuracy,
            r.seconds,
            r.samples_per_second
        );
        if let Some(c) = choices {
            let layers: Vec<String> = c.iter().map(|l| format!("{l:?}")).collect();
            line.push_str(&format!(", choices per layer {}", layers.join(" ")));
        }
        eprintln!("{line}");
    }

    fn phase_ended(&mut self, summary: &PhaseSummary) {
        self.finish();
        if let Some(end) = &summary.ended_early {
            eprintln!(
                "{} ended after epoch {} of {}: {}",
                summary.phase, end.epoch, self.epochs, end.reason
            );
        }
    }
}

/// Runs `load`, showing a spinner labelled `what` on a terminal once it has taken over a
/// second (quick loads show nothing).
pub fn while_loading<T>(what: &str, load: impl FnOnce() -> T) -> T {
    if !std::io::stderr().is_terminal() {
        return load();
    }
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (done, what) = (done.clone(), what.to_string());
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(1) {
                if done.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let bar = ProgressBar::new_spinner().with_message(what);
            bar.enable_steady_tick(Duration::from_millis(100));
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            bar.finish_and_clear();
        })
    };
    let out = load();
    done.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    out
}
