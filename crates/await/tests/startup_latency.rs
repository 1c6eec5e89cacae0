//! Benchmark, not a check: how long from the proxy being ready to the app starting.
//!
//! Run it on a release build:
//!
//! ```sh
//! cargo test --release -p lameduck-await --test startup_latency -- --ignored --nocapture
//! ```
//!
//! The app is `date +%s%N`, exec'd directly, so the time it prints is (an upper bound of) the
//! moment the app began; it shares the wall clock with the fake admin server, which records
//! when it flipped to ready and when it wrote its first 200. Three figures per mode:
//! - answer -> app: from the first 200 answer to `/ready` to the app's start, i.e.
//!   lameduck-await's own overhead (plus `date`'s start-up cost, shown separately);
//! - flip -> app: from `/ready` turning 200 to the app's start; it includes up to one
//!   `--backoff` (5ms here) of waiting for the next check;
//! - baseline: `date` spawned straight from the test, i.e. the app's own start-up cost.

mod support;

use std::{
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use support::{AdminServer, Ready, bare_lameduck_await, run};

const RUNS: usize = 30;

fn app_start(stdout: &str) -> SystemTime {
    let nanos: u64 = stdout.trim().parse().unwrap_or_else(|_| panic!("date printed {stdout:?}"));
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

fn micros(later: SystemTime, earlier: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(elapsed) => elapsed.as_secs_f64() * 1e6,
        Err(before) => -before.duration().as_secs_f64() * 1e6,
    }
}

fn summary(label: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{label:<34} n={:<3} p50={:>8.0}us  p90={:>8.0}us  max={:>8.0}us",
        samples.len(),
        pick(0.5),
        pick(0.9),
        samples[samples.len() - 1]
    );
}

#[test]
#[ignore = "benchmark; run with --release -- --ignored --nocapture"]
fn ready_to_app_start() {
    println!("binary: {}", env!("CARGO_BIN_EXE_lameduck-await"));
    for shutdown in [false, true] {
        let mode = if shutdown { "-S" } else { "exec" };
        let (mut from_answer, mut from_flip) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let server = AdminServer::start(Ready::After(Duration::from_millis(30)));
            let mut command = bare_lameduck_await();
            command.args(["--port", &server.port().to_string(), "--backoff", "5ms"]);
            if shutdown {
                command.arg("-S");
            }
            command.args(["--", "date", "+%s%N"]);
            let finished = run(command);
            assert_eq!(finished.code(), 0, "{}", finished.stderr);

            let started = app_start(&finished.stdout);
            let answered = server.first_ready_answer().expect("a 200 answer");
            from_answer.push(micros(started, answered));
            from_flip.push(micros(started, server.ready_from().expect("flips to ready")));
        }
        summary(&format!("{mode}: 200 answer -> app start"), from_answer);
        summary(&format!("{mode}: ready flip -> app start"), from_flip);
    }

    let baseline = (0..RUNS)
        .map(|_| {
            let before = SystemTime::now();
            let output = Command::new("date").arg("+%s%N").output().expect("run date");
            micros(app_start(&String::from_utf8_lossy(&output.stdout)), before)
        })
        .collect();
    summary("baseline: spawn -> date start", baseline);
}
