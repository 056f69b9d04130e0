//! Instruction counts, which do not depend on the machine's load: a bench
//! runs itself again under `valgrind --tool=callgrind` and counts only what
//! runs inside [`counted`].
//!
//! The child run (`EVENTHOOK_BENCH_CALLGRIND` set) skips criterion: it runs
//! each routine three times, with `small`, `small` and `large` units of work
//! (the first is a warm-up: lazy initialisation, allocator growth), and
//! callgrind writes one dump each time `counted` returns
//! (`--collect-atstart=no --toggle-collect=… --dump-after=…`). The count per
//! unit is the difference between the last two dumps over `large - small`,
//! so per-call fixed costs drop out. Collection is per thread: only the
//! thread inside `counted` is counted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Set in the child run.
const CHILD: &str = "EVENTHOOK_BENCH_CALLGRIND";
/// Both match [`counted`] only (its demangled name is `BENCH::support::callgrind::counted`).
/// They must differ: callgrind (3.19) keeps one setting per pattern, so the
/// same pattern given to both options would not dump.
const TOGGLE: &str = "*callgrind::counted";
const DUMP: &str = "*support::callgrind::counted";

/// Calls of [`counted`] so far, to check each run makes exactly one.
static COUNTED_CALLS: AtomicUsize = AtomicUsize::new(0);

/// The only code callgrind counts: call it exactly once in each run of a [`Routine`].
#[inline(never)]
pub fn counted(work: &mut dyn FnMut()) {
    COUNTED_CALLS.fetch_add(1, Ordering::Relaxed);
    work();
}

/// A measured routine: `run(count)` does `count` units of work, the part to
/// count inside one call of [`counted`] (setup and clean-up outside it).
pub struct Routine<'a> {
    /// The name it has in criterion's group (and in the report).
    pub id: &'a str,
    pub run: Box<dyn FnMut(usize) + 'a>,
}

impl<'a> Routine<'a> {
    /// A routine whose unit is one call of `work`, all counted.
    pub fn repeating(id: &'a str, mut work: impl FnMut() + 'a) -> Routine<'a> {
        let run = move |count: usize| {
            counted(&mut || {
                for _ in 0..count {
                    work();
                }
            })
        };
        Routine { id, run: Box::new(run) }
    }
}

/// What one unit of work is and how many units each counted run does.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// "push" or "event".
    pub unit: &'static str,
    /// Events in one unit, for the per-event figure.
    pub events_per_unit: usize,
    pub small: usize,
    pub large: usize,
}

/// Instructions per unit of each routine, or why there are none.
#[derive(Debug, Clone)]
pub enum Counts {
    Measured { plan: Plan, per_unit: Vec<(String, f64)> },
    Skipped(String),
}

/// Counts `routines` under callgrind and prints one line per routine.
///
/// In the child run this runs the routines and exits the process; call it
/// before criterion. Outside a real bench run (`cargo test --benches`) or
/// without valgrind on `PATH`, it returns [`Counts::Skipped`] (and says so).
pub fn count(bench: &str, plan: Plan, mut routines: Vec<Routine<'_>>) -> Counts {
    if std::env::var_os(CHILD).is_some() {
        for routine in &mut routines {
            for count in [plan.small, plan.small, plan.large] {
                let before = COUNTED_CALLS.load(Ordering::Relaxed);
                (routine.run)(count);
                let calls = COUNTED_CALLS.load(Ordering::Relaxed) - before;
                assert_eq!(calls, 1, "{}: one call of `counted` per run", routine.id);
            }
        }
        std::process::exit(0);
    }
    let counts = if super::is_bench_run() {
        let ids: Vec<&str> = routines.iter().map(|routine| routine.id).collect();
        drop(routines);
        measure(bench, plan, &ids).unwrap_or_else(Counts::Skipped)
    } else {
        Counts::Skipped("not a `cargo bench` run".to_owned())
    };
    println!();
    match &counts {
        Counts::Measured { plan, per_unit } => {
            for (id, instructions) in per_unit {
                let per_event = if plan.events_per_unit > 1 {
                    format!(", {:.0} per event", instructions / plan.events_per_unit as f64)
                } else {
                    String::new()
                };
                println!("instructions {id:<44} {instructions:>12.0} per {}{per_event} (callgrind)", plan.unit);
            }
        }
        Counts::Skipped(why) => println!("instruction counts skipped: {why}"),
    }
    counts
}

impl Counts {
    fn per_unit(&self, id: &str) -> Option<f64> {
        match self {
            Counts::Measured { per_unit, .. } => {
                per_unit.iter().find(|(known, _)| known == id).map(|&(_, instructions)| instructions)
            }
            Counts::Skipped(_) => None,
        }
    }

    /// "; instructions: crate N/event, baseline M/event, ratio R" for a
    /// `RESULT` line; the ratio is oriented like the time ratio beside it
    /// (`faster`: the baseline's count over the crate's).
    pub fn detail(&self, crate_id: &str, baseline_id: &str, faster: bool) -> String {
        let Counts::Measured { plan, .. } = self else {
            return "; instruction counts skipped".to_owned();
        };
        let (Some(ours), Some(theirs)) = (self.per_unit(crate_id), self.per_unit(baseline_id)) else {
            return String::new();
        };
        let ratio = if faster { theirs / ours } else { ours / theirs };
        let events = plan.events_per_unit as f64;
        let per_unit = if plan.events_per_unit > 1 {
            format!(" ({ours:.0} vs {theirs:.0} per {})", plan.unit)
        } else {
            String::new()
        };
        format!(
            "; instructions: crate {:.0}/event, baseline {:.0}/event{per_unit}, ratio {ratio:.2}",
            ours / events,
            theirs / events
        )
    }
}

/// Runs this bench under callgrind and reads its dumps.
fn measure(bench: &str, plan: Plan, ids: &[&str]) -> Result<Counts, String> {
    let exe = std::env::current_exe().map_err(|error| format!("cannot find this bench's executable: {error}"))?;
    let directory =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from).join("callgrind");
    std::fs::create_dir_all(&directory).map_err(|error| format!("cannot create {}: {error}", directory.display()))?;
    let out_file = directory.join(format!("{bench}.out"));
    remove_dumps(&out_file);
    let output = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--collect-atstart=no")
        .arg(format!("--toggle-collect={TOGGLE}"))
        .arg(format!("--dump-after={DUMP}"))
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(&exe)
        .env(CHILD, "1")
        .output()
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => "valgrind is not on PATH".to_owned(),
            _ => format!("cannot run valgrind: {error}"),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(format!("valgrind failed ({}): {}", output.status, tail.join(" / ")));
    }
    // One dump per run: warm-up, small, large for each routine in order.
    let mut per_unit = Vec::new();
    for (index, id) in ids.iter().enumerate() {
        let small = total_instructions(&dump_path(&out_file, 3 * index + 2))?;
        let large = total_instructions(&dump_path(&out_file, 3 * index + 3))?;
        per_unit.push(((*id).to_owned(), (large - small) as f64 / (plan.large - plan.small) as f64));
    }
    Ok(Counts::Measured { plan, per_unit })
}

/// Callgrind names the dump made the `number`th time (from 1) `out_file.number`.
fn dump_path(out_file: &Path, number: usize) -> PathBuf {
    let mut name = out_file.as_os_str().to_owned();
    name.push(format!(".{number}"));
    PathBuf::from(name)
}

/// Removes the dumps of an earlier run, so a missing dump cannot be read stale.
fn remove_dumps(out_file: &Path) {
    let _ = std::fs::remove_file(out_file);
    for number in 1.. {
        if std::fs::remove_file(dump_path(out_file, number)).is_err() {
            break;
        }
    }
}

/// The `Ir` total of a callgrind dump (its `totals:` or `summary:` line).
fn total_instructions(path: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix("totals:").or_else(|| line.strip_prefix("summary:")))
        .and_then(|figures| figures.split_whitespace().next())
        .and_then(|first| first.parse().ok())
        .ok_or_else(|| format!("no instruction total in {}", path.display()))
}
