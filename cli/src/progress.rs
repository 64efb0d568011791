//! Progress of a long command: an indicatif bar on a terminal, else a plain line now and
//! then (logs of background runs stay readable).
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    last_line: Instant,
    every: Duration,
}

impl Progress {
    /// Steps `start..total`; `quiet` prints nothing at all.
    pub fn new(start: u64, total: u64, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} {msg} [{elapsed_precise}, ETA {eta}]")
                    .expect("a valid template"),
            );
            bar.set_position(start);
            bar.reset_eta();
            bar
        });
        let every = if quiet { Duration::MAX } else { Duration::from_secs(15) };
        Progress { bar, total, last_line: Instant::now(), every }
    }

    /// After step `done` (1-based) with a status message.
    pub fn update(&mut self, done: u64, msg: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(msg.to_string());
            }
            None if self.last_line.elapsed() >= self.every || done == self.total => {
                eprintln!("step {done}/{}: {msg}", self.total);
                self.last_line = Instant::now();
            }
            None => {}
        }
    }

    /// A line above the bar (or plainly).
    pub fn println(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.println(msg),
            None if self.every != Duration::MAX => eprintln!("{msg}"),
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
