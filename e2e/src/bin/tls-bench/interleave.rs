//! Fine-grained interleaving of two arms A and B under the same load, so
//! that whatever else the machine does falls on both alike.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::util;

/// A round is disturbed when other processes (or the hypervisor) took more
/// than this share of the machine during it.
pub(crate) const DISTURBED: f64 = 0.05;

/// Order of the two arms in slot pair `i`: A B, B A, A B, ... so that a
/// linear drift of the machine cancels out.
fn order(i: usize) -> [bool; 2] {
    if i.is_multiple_of(2) {
        [false, true]
    } else {
        [true, false]
    }
}

/// Arms A and B alternate in short slots while the same client loops keep
/// running, so that whatever else the machine does falls on both arms
/// alike. Slots go A B, B A, A B, ... within a round; each round gives one
/// ratio, and the figure is the median over rounds.
pub(crate) struct Schedule {
    pub(crate) rounds: usize,
    /// A-and-B slot pairs per round.
    pub(crate) pairs_per_round: usize,
    pub(crate) slot: Duration,
    /// Wait after switching arms before counting, so that connections
    /// started under the other arm have finished.
    pub(crate) guard: Duration,
}

impl Schedule {
    pub(crate) fn describe(&self) -> String {
        let (rounds, pairs) = (self.rounds, self.pairs_per_round);
        let (slot, guard) = (self.slot.as_millis(), self.guard.as_millis());
        format!(
            "{rounds} rounds of {pairs} A/B slot pairs of {slot} ms (order A B, B A, ...; \
             {guard} ms guard after each switch)"
        )
    }
}

/// One round of an interleaved comparison.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Round {
    /// Operations per second of arms A and B.
    pub(crate) rates: [f64; 2],
    /// CPU per operation of A over that of B (> 1: B cheaper).
    pub(crate) cpu_ratio: f64,
    /// Share of the machine other processes used during the round.
    pub(crate) foreign: f64,
}

impl Round {
    pub(crate) fn ratio(&self) -> f64 {
        self.rates[1] / self.rates[0]
    }
}

/// Runs `schedule`; `count()` is the number of operations completed so far. `switch(arm)` selects an
/// arm (false: A, true: B) at the start of each slot; `body(arm)` is the
/// slot itself and must last `schedule.slot`.
pub(crate) async fn interleave<S, B, Fut>(
    schedule: &Schedule,
    count: impl Fn() -> u64,
    names: [&str; 2],
    mut switch: S,
    mut body: B,
) -> Vec<Round>
where
    S: FnMut(bool),
    B: FnMut(bool) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut rounds = Vec::with_capacity(schedule.rounds);
    for r in 0..schedule.rounds {
        let window = util::WindowStart::now();
        let mut done = [0u64; 2];
        let mut time = [Duration::ZERO; 2];
        let mut cpu = [0u64; 2];
        for k in 0..schedule.pairs_per_round {
            for arm in order(k) {
                switch(arm);
                tokio::time::sleep(schedule.guard).await;
                let (c0, t0, n0) = (count(), Instant::now(), util::ThreadsCpu::now());
                body(arm).await;
                let (c1, t1, n1) = (count(), Instant::now(), util::ThreadsCpu::now());
                let i = usize::from(arm);
                done[i] += c1.saturating_sub(c0);
                time[i] += t1 - t0;
                cpu[i] += n1.since(&n0);
            }
        }
        let foreign = window.foreign().unwrap_or(f64::NAN);
        let rate = |i: usize| done[i] as f64 / time[i].as_secs_f64();
        let per_op = |i: usize| cpu[i] as f64 / done[i].max(1) as f64;
        let round = Round {
            rates: [rate(0), rate(1)],
            cpu_ratio: per_op(0) / per_op(1),
            foreign,
        };
        let ([a, b], [rate_a, rate_b], n) = (names, round.rates, r + 1);
        let (ratio, cpu_ratio, other) = (round.ratio(), round.cpu_ratio, foreign * 100.0);
        let note = if foreign >= DISTURBED {
            " (disturbed)"
        } else {
            ""
        };
        println!(
            "   round {n:>2}: {a} {rate_a:.0}/s, {b} {rate_b:.0}/s, ratio {ratio:.4}, \
             CPU/op ratio {cpu_ratio:.4}, other processes {other:.1} %{note}"
        );
        rounds.push(round);
    }
    rounds
}

/// [`interleave`] where the arm is a flag the running loops read (`false`:
/// A) and each slot is a wait of `schedule.slot`.
pub(crate) async fn interleave_flag(
    schedule: &Schedule,
    count: impl Fn() -> u64,
    names: [&str; 2],
    arm: &AtomicBool,
) -> Vec<Round> {
    let switch = |b| arm.store(b, Ordering::Relaxed);
    let slot = |_| tokio::time::sleep(schedule.slot);
    interleave(schedule, count, names, switch, slot).await
}

/// The figure of an interleaved comparison: the median round ratio.
pub(crate) fn summarize(rounds: &[Round], names: [&str; 2]) -> (f64, String) {
    let ratios: Vec<f64> = rounds.iter().map(Round::ratio).collect();
    let cpu: Vec<f64> = rounds.iter().map(|r| r.cpu_ratio).collect();
    let a: Vec<f64> = rounds.iter().map(|r| r.rates[0]).collect();
    let b: Vec<f64> = rounds.iter().map(|r| r.rates[1]).collect();
    let pooled = b.iter().sum::<f64>() / a.iter().sum::<f64>();
    let (lo, hi) = util::range(&ratios);
    let disturbed = rounds.iter().filter(|r| r.foreign >= DISTURBED).count();
    let clean = rounds.iter().filter(|r| r.foreign < DISTURBED);
    let clean: Vec<f64> = clean.map(Round::ratio).collect();
    let clean_note = match disturbed > 0 && clean.len() >= 3 {
        true => format!(", undisturbed rounds only {:.3}", util::median(&clean)),
        false => String::new(),
    };
    let (median, n, [name_a, name_b]) = (util::median(&ratios), ratios.len(), names);
    let (rate_a, rate_b, cpu) = (util::median(&a), util::median(&b), util::median(&cpu));
    let value = format!(
        "{median:.3} (median of {n} rounds, range {lo:.3}..{hi:.3}, pooled {pooled:.3}; \
         {name_b} {rate_b:.0}/s vs {name_a} {rate_a:.0}/s; CPU-per-op ratio {cpu:.3}; \
         {disturbed} rounds disturbed by other processes{clean_note})"
    );
    (median, value)
}

/// A comparison of the plain arm (A) against the reloadable one (B, the
/// flag `reloadable_arm` set) with [`interleave_flag`], and, with
/// `control_rounds`, its A/A control: the noise floor of this schedule on
/// this machine right now, the same comparison over that many rounds with
/// the plain arm on both sides. Returns the rounds of both.
pub(crate) async fn plain_vs_reloadable(
    schedule: &Schedule,
    count: impl Fn() -> u64,
    reloadable_arm: &AtomicBool,
    control_rounds: Option<usize>,
) -> (Vec<Round>, Option<Vec<Round>>) {
    let names = ["plain", "reloadable"];
    let rounds = interleave_flag(schedule, &count, names, reloadable_arm).await;
    let Some(rounds_of_control) = control_rounds else {
        return (rounds, None);
    };
    let schedule = Schedule {
        rounds: rounds_of_control,
        ..*schedule
    };
    println!(
        "   control, plain in both arms (A/A): {}",
        schedule.describe()
    );
    reloadable_arm.store(false, Ordering::Relaxed);
    // A flag that nothing reads: both arms run the plain one.
    let unread = AtomicBool::new(false);
    let control = interleave_flag(&schedule, &count, ["plain", "plain"], &unread).await;
    (rounds, Some(control))
}

/// The rows of a [`plain_vs_reloadable`] comparison: `figure` (numbered
/// `number`), the median ratio checked against ≥ 0.99; the noise floor of
/// the `control` when there is one; and the `failed` operations, with the
/// first error, as a failed check labelled `failures`.
pub(crate) fn plain_vs_reloadable_rows(
    figure: &str,
    number: u8,
    (rounds, control): (Vec<Round>, Option<Vec<Round>>),
    (failed, first_error): (u64, Option<String>),
    failures: &str,
) -> Vec<util::Row> {
    let (ratio, value) = summarize(&rounds, ["plain", "reloadable"]);
    let mut rows = vec![util::Row::check(figure, value, "≥ 0.99", ratio >= 0.99)];
    if let Some(control) = control {
        let ratios: Vec<f64> = control.iter().map(Round::ratio).collect();
        let (lo, hi) = util::range(&ratios);
        rows.push(util::Row::info(
            format!("{number}. noise floor: plain ÷ plain, same schedule (A/A)"),
            format!(
                "{:.3} (median of {} rounds, range {lo:.3}..{hi:.3})",
                util::median(&ratios),
                ratios.len()
            ),
        ));
    }
    if failed > 0 {
        rows.push(util::Row::check(
            format!("{number}. {failures}"),
            format!("{failed} (first: {})", first_error.unwrap_or_default()),
            "0",
            false,
        ));
    }
    rows
}
