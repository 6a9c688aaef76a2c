//! Runs every raw-protocol scenario against Skein and the reference Apache Kafka broker and
//! compares what a client sees. An unlisted difference fails, and so does a listed one that
//! no longer differs. Results go to `target/compat/raw.json`; `tests/compat/gen_doc.py`
//! turns them (with the client suite's) into docs/compatibility.md.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};
use skein_compat::brokers::{results_dir, skein_bin, workspace_root, Reference, Skein};
use skein_compat::known::{reason, KNOWN_DIFFERENCES};
use skein_compat::{normalise, scenarios, Ctx, Scenario};

const WORKERS: usize = 4;

/// One scenario's run: its index, Skein's observation, Kafka's (when there is a reference
/// broker) and the seconds it took.
type Outcome = (usize, Value, Option<Value>, f64);

fn run_one(s: &Scenario, bootstrap: &str, prefix: String) -> Value {
    let ctx = Ctx {
        bootstrap: bootstrap.to_owned(),
        prefix: prefix.clone(),
    };
    match (s.run)(&ctx) {
        Ok(v) => normalise(v, &prefix),
        Err(e) => normalise(json!({"scenario_error": format!("{e:#}")}), &prefix),
    }
}

fn run_id() -> String {
    format!(
        "compat{}x{}",
        std::process::id(),
        skein_compat::now_ms() % 1_000_000
    )
}

#[test]
fn differential() {
    let required = std::env::var("SKEIN_REQUIRE_REFERENCE").as_deref() == Ok("1");
    if !skein_bin().exists() && !required {
        eprintln!(
            "\n*** SKIPPED: the Kafka compatibility scenarios: no skein binary at {} \
             (cargo build --release --bin skein, or set SKEIN_BIN) ***\n",
            skein_bin().display()
        );
        return;
    }
    let mut skein = Skein::start().expect("start skein");
    let reference = match Reference::find_or_start() {
        Ok(r) => Some(r),
        Err(e) => {
            if required {
                panic!("SKEIN_REQUIRE_REFERENCE=1 but there is no reference broker: {e:#}");
            }
            eprintln!("\n*** SKIPPED: the Kafka comparison (no reference broker: {e:#}); running the scenarios against Skein alone ***\n");
            None
        }
    };
    scenarios::warm_up(&skein.bootstrap).expect("skein warm-up");
    if let Some(r) = &reference {
        scenarios::warm_up(&r.bootstrap).expect("reference warm-up");
    }
    let all = scenarios::all();
    let run = run_id();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(s) = all.get(i) else { break };
                let started = Instant::now();
                let prefix = format!("{run}s{i}");
                let (a, b) = std::thread::scope(|inner| {
                    let k = reference.as_ref().map(|r| {
                        let p = prefix.clone();
                        inner.spawn(move || run_one(s, &r.bootstrap, p))
                    });
                    let a = run_one(s, &skein.bootstrap, prefix.clone());
                    (a, k.map(|h| h.join().expect("scenario thread")))
                });
                results
                    .lock()
                    .unwrap()
                    .push((i, a, b, started.elapsed().as_secs_f64()));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);

    assert!(
        skein.alive(),
        "skein died during the scenarios\n{}",
        skein.log()
    );
    assert!(
        !skein.log().contains("panicked at"),
        "skein panicked\n{}",
        skein.log()
    );

    let Some(_) = reference else {
        for (i, a, _, _) in &results {
            if a.get("scenario_error").is_some() {
                eprintln!("{}: {}", all[*i].name, a);
            }
        }
        eprintln!("\n*** SKIPPED: no comparison with Apache Kafka was made (see above) ***\n");
        return;
    };

    let mut failures = vec![];
    let mut out = vec![];
    let (mut same, mut differs) = (0, 0);
    for (i, a, b, secs) in &results {
        let s = &all[*i];
        let b = b.as_ref().expect("reference ran");
        let equal = a == b;
        let known = reason(s.name);
        if a.get("scenario_error").is_some() && b.get("scenario_error").is_some() {
            failures.push(format!(
                "{}: the scenario fails on both brokers:\n  skein: {a}\n  kafka: {b}",
                s.name
            ));
        }
        match (equal, known) {
            (true, None) => same += 1,
            (false, Some(_)) => differs += 1,
            (false, None) => {
                differs += 1;
                failures.push(format!(
                    "{}: unlisted difference\n  skein: {a}\n  kafka: {b}",
                    s.name
                ));
            }
            (true, Some(_)) => {
                same += 1;
                failures.push(format!(
                    "{}: listed as a known difference but both brokers now agree: {a}",
                    s.name
                ));
            }
        }
        out.push(json!({
            "name": s.name,
            "area": s.area(),
            "status": if equal { "same" } else { "differs" },
            "reason": if equal { None } else { known },
            "skein": a,
            "kafka": b,
            "seconds": (secs * 10.0).round() / 10.0,
        }));
    }
    for (name, _) in KNOWN_DIFFERENCES {
        if !all.iter().any(|s| s.name == *name) {
            failures.push(format!(
                "{name}: listed as a known difference but there is no such scenario"
            ));
        }
    }
    let dir = results_dir();
    std::fs::create_dir_all(&dir).expect("create target/compat");
    let doc = json!({"suite": "raw protocol (skein-compat)", "scenarios": out});
    std::fs::write(
        dir.join("raw.json"),
        serde_json::to_string_pretty(&doc).unwrap(),
    )
    .expect("write raw.json");
    eprintln!(
        "compat: {} scenarios, {same} same, {differs} differ; results in {}",
        all.len(),
        dir.join("raw.json").display()
    );
    regenerate_doc();
    assert!(
        failures.is_empty(),
        "{} compatibility failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Runs the doc generator when python3 is there (it also runs after the client suite).
fn regenerate_doc() {
    let script = workspace_root().join("tests/compat/gen_doc.py");
    match std::process::Command::new("python3").arg(&script).status() {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!(
            "note: {} exited with {s}; docs/compatibility.md not regenerated",
            script.display()
        ),
        Err(e) => {
            eprintln!("note: cannot run python3 ({e}); docs/compatibility.md not regenerated")
        }
    }
}
