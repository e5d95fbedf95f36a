//! Training progress: an indicatif bar per epoch on a terminal (batches, elapsed time,
//! ETA), and a line per epoch with the phase's elapsed time and ETA; a sweep's lines name
//! their cell.

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
    /// Before every bar and line: a sweep's `[3/18] a03-relu-s0`.
    label: Option<String>,
    /// The pool's names, which label phase 1's choice counts.
    pool: Vec<String>,
    phase: String,
    epochs: usize,
    batches: usize,
    /// When this process started the phase, and the epochs it has run of it since (a
    /// resumed phase starts past its first epoch), for the ETA.
    started: Instant,
    ran: usize,
}

impl Reporter {
    /// A reporter for a run with `pool`'s activations; `label` names a sweep's cell.
    pub fn new(pool: &[String], label: Option<String>) -> Self {
        Self {
            // The bar draws on stderr; plain lines when either stream is redirected.
            terminal: std::io::stdout().is_terminal() && std::io::stderr().is_terminal(),
            bar: None,
            label,
            pool: pool.to_vec(),
            phase: String::new(),
            epochs: 0,
            batches: 0,
            started: Instant::now(),
            ran: 0,
        }
    }

    /// `text` after the label, if any.
    fn labelled(&self, text: String) -> String {
        match &self.label {
            Some(l) => format!("{l} {text}"),
            None => text,
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
        self.started = Instant::now();
        self.ran = 0;
        if phase == Phase::Phase1 && epochs == 0 {
            eprintln!(
                "{}",
                self.labelled(
                    "phase1: 0 epochs, so no selection: phase 2 keeps each neuron's initial choice, the argmax of its initial logits (an activation drawn uniformly from the pool with training.seed)".into()
                )
            );
        }
    }

    fn batch(&mut self, epoch: usize, batch: usize, loss: f64, samples_per_second: f64) {
        if !self.terminal {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(self.batches as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} batches, {elapsed_precise} elapsed, ETA {eta} {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        let prefix = match &self.label {
            Some(l) => format!("{l} {} epoch {epoch}/{}", self.phase, self.epochs),
            None => format!("{} epoch {epoch}/{}", self.phase, self.epochs),
        };
        bar.set_prefix(prefix);
        bar.set_position(batch as u64);
        bar.set_message(format!(
            "loss {loss:.4} · {samples_per_second:.0} samples/s"
        ));
    }

    fn epoch(&mut self, r: &EpochRecord, choices: Option<&[Vec<usize>]>) {
        self.finish();
        self.ran += 1;
        let elapsed = self.started.elapsed();
        // The phase's remaining epochs at this process's mean epoch time (at most: an
        // automatic transition or early stopping can end the phase sooner).
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let left = count(self.epochs.saturating_sub(r.epoch));
        let eta = (elapsed / count(self.ran.max(1))).saturating_mul(left);
        let mut line = format!(
            "{} epoch {}/{}: train loss {:.4}, val loss {:.4}, val acc {:.2}%, {:.1} s, {:.0} samples/s, elapsed {}, ETA {}",
            r.phase,
            r.epoch,
            self.epochs,
            r.train_loss,
            r.validation_loss,
            100.0 * r.validation_accuracy,
            r.seconds,
            r.samples_per_second,
            clock(elapsed),
            clock(eta)
        );
        if let Some(c) = choices {
            // Per hidden layer, how many neurons' argmax choice is each pool activation.
            let layers: Vec<String> = c.iter().map(|l| format!("{l:?}")).collect();
            line.push_str(&format!(
                ", neurons choosing {} per layer: {}",
                self.pool.join("/"),
                layers.join(" ")
            ));
        }
        eprintln!("{}", self.labelled(line));
    }

    fn phase_ended(&mut self, summary: &PhaseSummary) {
        self.finish();
        if let Some(end) = &summary.ended_early {
            let line = format!(
                "{} ended after epoch {} of {}: {}",
                summary.phase, end.epoch, self.epochs, end.reason
            );
            eprintln!("{}", self.labelled(line));
        }
    }
}

/// `d` as `HH:MM:SS`, as indicatif's `{elapsed_precise}` writes it.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
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
