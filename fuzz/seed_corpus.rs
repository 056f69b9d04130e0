//! Writes `corpus/parse_push/` and `corpus/receiver/` from the golden
//! vectors in `../tests/vectors/`: every event in them as a push of one,
//! all of them as one push, an event of every `Type` code they list, and a
//! message for every date they list.
//! Run from `fuzz/`: `cargo run --bin seed_corpus`.

use std::fs;
use std::path::Path;

use serde_json::Value;

/// Strings of the vectors (event objects and dates among them), and the `code` of every object that has one.
fn walk<'a>(value: &'a Value, found: &mut Vec<&'a str>, codes: &mut Vec<u64>) {
    match value {
        Value::String(text) => found.push(text),
        Value::Array(items) => items.iter().for_each(|item| walk(item, found, codes)),
        Value::Object(fields) => {
            codes.extend(fields.get("code").and_then(Value::as_u64));
            fields.values().for_each(|field| walk(field, found, codes));
        }
        _ => {}
    }
}

/// An event with every contract key, of `Type` `code`, dated `date`.
fn every_key(code: u64, date: &str) -> String {
    format!(
        r#"{{"Type":{code},"ItemType":"Text","ItemSubType":"s","Data":"d","Date":{},"BotToken":"b","AccountName":"a","ConversationId":"c","UserName":"u","Channel":"WebChannel","Text":"t","Name":"n","Key":"k","Variables":{{"plan":"gold"}}}}"#,
        serde_json::to_string(date).unwrap_or_default()
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors");
    let mut events = Vec::new();
    let mut dates = Vec::new();
    let mut codes = Vec::new();
    let mut names: Vec<_> = fs::read_dir(&vectors)?.collect::<Result<Vec<_>, _>>()?;
    names.sort_by_key(|entry| entry.file_name());
    for entry in names {
        let text = fs::read_to_string(entry.path())?;
        let value: Value = serde_json::from_str(&text)?;
        let mut found = Vec::new();
        walk(&value, &mut found, &mut codes);
        for text in found {
            if text.starts_with('{') && serde_json::from_str::<Value>(text).is_ok() {
                events.push(text.to_owned());
            } else if text.len() >= 19 && text.as_bytes()[4] == b'-' && text.as_bytes()[10] == b'T' {
                dates.push(text.to_owned());
            }
        }
    }
    let mut pushes: Vec<String> = events.iter().map(|event| format!("[{event}]")).collect();
    pushes.push(format!("[{}]", events.join(",")));
    pushes.extend(codes.iter().map(|code| format!("[{}]", every_key(*code, "2019-07-10T15:47:58.580873+00:00"))));
    pushes.extend(dates.iter().map(|date| format!("[{}]", every_key(1, date))));
    for target in ["parse_push", "receiver"] {
        let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
        fs::create_dir_all(&directory)?;
        for (index, push) in pushes.iter().enumerate() {
            // The receiver's first byte picks the header: 0 is the right bearer.
            let bytes =
                if target == "receiver" { [&[0u8][..], push.as_bytes()].concat() } else { push.clone().into_bytes() };
            fs::write(directory.join(format!("vector-{index:03}")), bytes)?;
        }
    }
    println!(
        "{} seeds from {} events, {} Type codes and {} dates in {}",
        pushes.len(),
        events.len(),
        codes.len(),
        dates.len(),
        vectors.display()
    );
    Ok(())
}
