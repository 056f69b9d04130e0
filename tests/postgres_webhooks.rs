//! The webhooks' settings in the `webhooks` table against a real database:
//! a saved config loads back equal; saving again re-enables and leaves the
//! schedule, lease and events alone; removing takes the events along; a row
//! edited into an invalid value is refused naming bot and column, never
//! showing the secret.
#![cfg(feature = "postgres")]

mod postgres_support;

use std::time::Duration;

use eventhook::postgres::{load_webhook, load_webhooks, migrate, remove_webhook, save_webhook, WebhookStoreError};
use eventhook::{ConfigError, EventFlags, EventKind, Plan, SigningSecret, WebhookConfig};
use postgres_support::TestSchema;

const SECRET: &str = "s3cr3t-Bearer-Value";

/// A config with every setting away from its default.
fn full_config(bot_token: &str) -> (WebhookConfig, Vec<String>) {
    let signing: Vec<String> = (0..2).map(|_| SigningSecret::generate().expect("random bytes").expose()).collect();
    let config =
        WebhookConfig::builder(bot_token, "Matelab Srl — Società", "https://hooks.example.com:8443/e?x=1", SECRET)
            .events(EventFlags::from_kinds([EventKind::UserMessage, EventKind::NlpMissed, EventKind::WrongAnswer]))
            .plan(Plan::Free)
            .push_interval(Duration::from_millis(1500))
            .max_batch_events(7)
            .max_batch_bytes(4096)
            .one_event_per_call(true)
            .request_timeout(Duration::from_millis(2500))
            .queue_capacity(123)
            .accept_any_2xx(true)
            .include_variables(["plan", "e-mail", "名前"])
            .signing_secrets(signing.iter().map(String::as_str))
            .build()
            .expect("a valid config");
    (config, signing)
}

/// Every accessor of `left` equals `right`'s.
fn assert_same_config(left: &WebhookConfig, right: &WebhookConfig) {
    assert_eq!(left.bot_token(), right.bot_token());
    assert_eq!(left.account_name(), right.account_name());
    assert_eq!(left.url(), right.url());
    assert_eq!(left.secret().expose(), right.secret().expose());
    assert_eq!(left.events(), right.events());
    assert_eq!(left.plan(), right.plan());
    assert_eq!(left.push_interval(), right.push_interval());
    assert_eq!(left.max_batch_events(), right.max_batch_events());
    assert_eq!(left.max_batch_bytes(), right.max_batch_bytes());
    assert_eq!(left.one_event_per_call(), right.one_event_per_call());
    assert_eq!(left.request_timeout(), right.request_timeout());
    assert_eq!(left.queue_capacity(), right.queue_capacity());
    assert_eq!(left.accept_any_2xx(), right.accept_any_2xx());
    assert_eq!(left.included_variables(), right.included_variables());
    assert_eq!(left.signing_secrets(), right.signing_secrets());
}

async fn migrated(test: &TestSchema) -> tokio_postgres::Client {
    let mut client = test.connect().await;
    migrate(&mut client, &test.schema).await.expect("migrating");
    client
}

#[tokio::test]
async fn a_saved_webhook_loads_back_with_every_setting() {
    let Some(test) = TestSchema::new("a_saved_webhook_loads_back_with_every_setting") else { return };
    let client = migrated(&test).await;
    let (full, signing) = full_config("bot-full");
    let plain = WebhookConfig::builder("bot-plain", "Acme", "http://127.0.0.1:9/hook", SECRET).build().unwrap();

    assert_eq!(save_webhook(&client, &test.schema, &full).await.expect("saving"), 1);
    assert_eq!(save_webhook(&client, &test.schema, &plain).await.expect("saving"), 1);

    let loaded = load_webhook(&client, &test.schema, "bot-full").await.expect("loading").expect("a row");
    assert_same_config(&loaded.config, &full);
    let exposed: Vec<String> = loaded.config.signing_secrets().iter().map(SigningSecret::expose).collect();
    assert_eq!(exposed, signing);
    assert_eq!((loaded.disabled, loaded.failures_in_row, loaded.last_failure.as_deref()), (false, 0, None));
    assert_eq!(loaded.generation, 1);

    let all = load_webhooks(&client, &test.schema).await.expect("loading all");
    let tokens: Vec<&str> = all.iter().map(|stored| stored.config.bot_token()).collect();
    assert_eq!(tokens, ["bot-full", "bot-plain"]);
    assert_same_config(&all[1].config, &plain);
    assert!(load_webhook(&client, &test.schema, "bot-none").await.expect("loading").is_none());
    assert!(!format!("{all:?}").contains(SECRET), "{all:?}");
}

#[tokio::test]
async fn saving_again_re_enables_and_leaves_schedule_lease_and_events_alone() {
    let Some(test) = TestSchema::new("saving_again_re_enables_and_leaves_schedule_lease_and_events_alone") else {
        return;
    };
    let client = migrated(&test).await;
    let (config, _) = full_config("bot-1");
    save_webhook(&client, &test.schema, &config).await.expect("saving");
    // The 11th failure disabled it during a call that holds a lease, with an event queued.
    let schema = test.quoted();
    client
        .batch_execute(&format!(
            "UPDATE {schema}.webhooks SET disabled = true, failures_in_row = 11, last_failure = 'answered 500',
                due_at = '2030-01-01T00:00:00Z', claim_id = nextval('{schema}.claim_ids'),
                lease_until = '2030-01-01T00:00:30Z';
             INSERT INTO {schema}.events (bot_token, body, ends, events, bytes, accepted_at)
             VALUES ('bot-1', '{{}}'::bytea, ARRAY[2], 1, 2, now())"
        ))
        .await
        .expect("disabling by SQL");
    let disabled = load_webhook(&client, &test.schema, "bot-1").await.unwrap().unwrap();
    assert_eq!((disabled.disabled, disabled.failures_in_row), (true, 11));
    assert_eq!(disabled.last_failure.as_deref(), Some("answered 500"));
    let bookkeeping = || {
        let client = &client;
        let statement = format!(
            "SELECT due_at::text, claim_id, lease_until::text, (SELECT count(*) FROM {schema}.events)
             FROM {schema}.webhooks"
        );
        async move {
            let row = client.query_one(&statement, &[]).await.expect("reading the bookkeeping");
            (row.get::<_, String>(0), row.get::<_, i64>(1), row.get::<_, String>(2), row.get::<_, i64>(3))
        }
    };
    let before = bookkeeping().await;

    // The same settings: only `disabled` changes, so the bump is the re-enable's.
    let generation = save_webhook(&client, &test.schema, &config).await.expect("saving again");

    let loaded = load_webhook(&client, &test.schema, "bot-1").await.unwrap().unwrap();
    assert_eq!((loaded.disabled, loaded.failures_in_row, loaded.last_failure), (false, 0, None));
    assert_eq!(generation, disabled.generation + 1);
    assert_eq!(loaded.generation, generation);
    assert_same_config(&loaded.config, &config);
    assert_eq!(bookkeeping().await, before, "due_at, the lease and the events are untouched");

    // The same settings on an enabled webhook change nothing the trigger counts.
    assert_eq!(save_webhook(&client, &test.schema, &config).await.expect("saving once more"), generation);
}

#[tokio::test]
async fn removing_deletes_the_row_and_its_events() {
    let Some(test) = TestSchema::new("removing_deletes_the_row_and_its_events") else { return };
    let client = migrated(&test).await;
    for token in ["bot-1", "bot-2"] {
        save_webhook(&client, &test.schema, &full_config(token).0).await.expect("saving");
    }
    let schema = test.quoted();
    client
        .batch_execute(&format!(
            "INSERT INTO {schema}.events (bot_token, body, ends, events, bytes, accepted_at)
             SELECT token, '{{}}'::bytea, ARRAY[2], 1, 2, now() FROM unnest(ARRAY['bot-1', 'bot-1', 'bot-2']) AS token"
        ))
        .await
        .expect("queueing events");

    assert!(remove_webhook(&client, &test.schema, "bot-1").await.expect("removing"));
    assert!(!remove_webhook(&client, &test.schema, "bot-1").await.expect("removing again"));

    assert!(load_webhook(&client, &test.schema, "bot-1").await.unwrap().is_none());
    let events: Vec<(String, i64)> = client
        .query(&format!("SELECT bot_token, sum(events)::bigint FROM {schema}.events GROUP BY bot_token"), &[])
        .await
        .expect("counting events")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(events, [("bot-2".to_owned(), 1)]);
}

#[tokio::test]
async fn the_documented_query_shows_each_row_s_waiting_events_as_json() {
    let Some(test) = TestSchema::new("the_documented_query_shows_each_row_s_waiting_events_as_json") else { return };
    let client = migrated(&test).await;
    save_webhook(&client, &test.schema, &full_config("bot-1").0).await.expect("saving");
    let schema = test.quoted();
    // A row whose oldest event a call delivered, and a row of one event.
    client
        .batch_execute(&format!(
            r#"INSERT INTO {schema}.events (bot_token, body, ends, delivered, events, bytes, accepted_at)
               VALUES ('bot-1', convert_to('{{"a":1}},{{"b":2}},{{"c":3}}', 'UTF8'), ARRAY[7, 15, 23], 1, 2, 14, now()),
                      ('bot-1', convert_to('{{"d":4}}', 'UTF8'), ARRAY[7], 0, 1, 7, now())"#
        ))
        .await
        .expect("queueing events");
    // As `eventhook::postgres`'s docs give it, on this schema.
    let statement = format!(
        "SELECT bot_token, ('[' || convert_from(substr(body, coalesce(ends[delivered] + 2, 1)), 'UTF8') || ']')::jsonb
         FROM {schema}.events ORDER BY id"
    );
    let shown: Vec<(String, serde_json::Value)> = client
        .query(&statement, &[])
        .await
        .expect("the documented query")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let expected = [
        ("bot-1".to_owned(), serde_json::json!([{"b": 2}, {"c": 3}])),
        ("bot-1".to_owned(), serde_json::json!([{"d": 4}])),
    ];
    assert_eq!(shown, expected);
}

#[tokio::test]
async fn a_row_edited_into_an_invalid_value_is_refused_naming_bot_and_column_without_the_secret() {
    let Some(test) =
        TestSchema::new("a_row_edited_into_an_invalid_value_is_refused_naming_bot_and_column_without_the_secret")
    else {
        return;
    };
    let client = migrated(&test).await;
    let (config, signing) = full_config("bot-edited");
    save_webhook(&client, &test.schema, &config).await.expect("saving");
    let table = format!("{}.webhooks", test.quoted());

    type Expected = Option<fn(&ConfigError) -> bool>;
    let cases: [(String, &str, Expected); 6] = [
        (
            format!("url = 'https://admin:{SECRET}@hooks.example.com/e'"),
            "url",
            Some(|error: &ConfigError| matches!(error, ConfigError::InvalidUrl { .. })),
        ),
        (
            "queue_capacity = 0".to_owned(),
            "queue_capacity",
            Some(|error: &ConfigError| matches!(error, ConfigError::OutOfRange { setting: "queue_capacity", .. })),
        ),
        (
            format!("secret = '{SECRET} x'"),
            "secret",
            Some(|error: &ConfigError| matches!(error, ConfigError::InvalidSecret { .. })),
        ),
        (format!("signing_secrets = ARRAY['{}x!']", signing[0]), "signing_secrets", None),
        ("events = 65536".to_owned(), "events", None),
        ("push_interval_ms = -1".to_owned(), "push_interval_ms", None),
    ];
    for (set, column, expected) in cases {
        let restore = format!(
            "UPDATE {table} SET url = 'https://hooks.example.com/e', queue_capacity = 5, secret = '{SECRET}',
            signing_secrets = '{{}}', events = 1, push_interval_ms = 1000"
        );
        client.batch_execute(&restore).await.expect("restoring a valid row");
        client.batch_execute(&format!("UPDATE {table} SET {set}")).await.expect(&set);

        for error in [
            load_webhook(&client, &test.schema, "bot-edited").await.expect_err(&set),
            load_webhooks(&client, &test.schema).await.expect_err(&set),
        ] {
            match (&error, expected) {
                (WebhookStoreError::InvalidRow { bot_token, column: found, source }, Some(matches)) => {
                    assert_eq!((bot_token.as_str(), *found), ("bot-edited", column), "{error}");
                    assert!(matches(source), "{set}: {source:?}");
                }
                (WebhookStoreError::InvalidRow { bot_token, column: found, .. }, None)
                | (WebhookStoreError::UnreadableRow { bot_token, column: found, .. }, None) => {
                    assert_eq!((bot_token.as_str(), *found), ("bot-edited", column), "{error}");
                }
                _ => panic!("{set}: unexpected {error:?}"),
            }
            let shown = format!("{error} {error:?}");
            assert!(shown.contains("\"bot-edited\"") && shown.contains(column), "{shown}");
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(!shown.contains(&signing[0][6..]), "{shown}");
        }
    }
}

#[tokio::test]
async fn a_database_error_names_the_operation_and_bot_without_the_row() {
    let Some(test) = TestSchema::new("a_database_error_names_the_operation_and_bot_without_the_row") else { return };
    let client = migrated(&test).await;
    // A constraint of the host's that the row breaks: PostgreSQL's DETAIL would quote the whole row.
    client
        .batch_execute(&format!("ALTER TABLE {}.webhooks ADD CHECK (queue_capacity < 100)", test.quoted()))
        .await
        .expect("adding a constraint");

    let (config, signing) = full_config("bot-1");

    let error = save_webhook(&client, &test.schema, &config).await.expect_err("the check fails");

    assert!(
        matches!(&error, WebhookStoreError::Database { operation: "saving the webhook", bot_token: Some(token), code: Some(code), .. }
            if token == "bot-1" && *code == tokio_postgres::error::SqlState::CHECK_VIOLATION),
        "{error:?}"
    );
    let shown = format!("{error} {error:?}");
    assert!(shown.contains("violates check constraint"), "{shown}");
    assert!(!shown.contains(SECRET) && !shown.contains(&signing[0][6..]), "{shown}");
    if let Some(password) = test.password() {
        assert!(!shown.contains(&password), "{shown}");
    }
}

#[tokio::test]
async fn a_duration_in_fractions_of_a_millisecond_is_refused_not_rounded() {
    let Some(test) = TestSchema::new("a_duration_in_fractions_of_a_millisecond_is_refused_not_rounded") else { return };
    let client = migrated(&test).await;
    let config = WebhookConfig::builder("bot-1", "Acme", "https://hooks.example.com/e", SECRET)
        .push_interval(Duration::from_micros(1500))
        .build()
        .unwrap();

    let error = save_webhook(&client, &test.schema, &config).await.expect_err("1.5 ms is not whole milliseconds");

    assert!(
        matches!(&error, WebhookStoreError::Unstorable { bot_token, column: "push_interval_ms", .. } if bot_token == "bot-1"),
        "{error:?}"
    );
    assert!(load_webhooks(&client, &test.schema).await.unwrap().is_empty(), "nothing was written");
}
