//! The registry against a real one-member store: Kubernetes object semantics end to end —
//! creation bookkeeping, optimistic concurrency, generations and subresources, paged and
//! filtered lists, watches, graceful deletion and finalizers, service address allocation,
//! namespace termination, fencing and validation.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use anyhow::Result;
use anyhow::bail;
use anyhow::ensure;
use common::TestRegistry;
use common::changes;
use common::config_map;
use common::deployment;
use common::name;
use common::pod;
use common::quiet;
use common::rt;
use common::rv;
use common::service;
use common::summary;
use common::text;
use serde_json::Value;
use serde_json::json;
use trireme_model::field::Reason;
use trireme_model::selector::FieldSelector;
use trireme_model::selector::LabelSelector;
use trireme_model::version::ReadAt;
use trireme_registry::ChangeType;
use trireme_registry::DeleteOptions;
use trireme_registry::ListOptions;
use trireme_registry::ObjectList;
use trireme_registry::RegistryConfig;
use trireme_registry::RegistryError;
use trireme_registry::SYSTEM_NAMESPACES;
use trireme_registry::Scope;
use trireme_registry::WatchOptions;
use trireme_registry::WriteOptions;
use trireme_store::StoreError;
use trireme_store::types::Command;
use trireme_store::types::Request;

fn names(items: &[Value]) -> Vec<String> {
    items.iter().map(|o| name(o).to_string()).collect()
}

fn grace(seconds: i64) -> DeleteOptions {
    DeleteOptions { grace_period_seconds: Some(seconds), ..Default::default() }
}

fn labels(selector: &str) -> Result<ListOptions> {
    Ok(ListOptions { labels: LabelSelector::parse(selector)?, ..Default::default() })
}

fn fields(selector: &str) -> Result<ListOptions> {
    Ok(ListOptions { fields: FieldSelector::parse(selector)?, ..Default::default() })
}

fn cluster_ip(service: &Value) -> Result<Ipv4Addr> {
    Ok(text(service, "/spec/clusterIP").parse()?)
}

fn node_ports(service: &Value) -> Vec<i64> {
    service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ports| ports.iter().filter_map(|p| p.get("nodePort").and_then(Value::as_i64)).collect())
        .unwrap_or_default()
}

fn in_service_range(ip: Ipv4Addr) -> bool {
    u32::from(ip) & 0xfff0_0000 == u32::from(Ipv4Addr::new(10, 96, 0, 0))
}

#[tokio::test]
async fn bootstrap_creates_the_system_namespaces_and_may_run_again() -> Result<()> {
    let t = TestRegistry::start().await?;
    let namespaces = rt("namespaces");

    eprintln!("--- the first bootstrap (in start) created the system namespaces");
    let list = t.registry.list(namespaces, None, &ListOptions::default()).await?;
    let mut expected: Vec<String> = SYSTEM_NAMESPACES.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(names(&list.items), expected);
    for item in &list.items {
        assert_eq!(text(item, "/status/phase"), "Active", "{item}");
        assert!(!text(item, "/metadata/uid").is_empty(), "{item}");
    }

    eprintln!("--- bootstrapping again changes nothing");
    let revision = t.store.revision();
    t.registry.bootstrap().await?;
    t.registry.bootstrap().await?;
    assert_eq!(t.store.revision(), revision, "a second bootstrap wrote");
    let again = t.registry.list(namespaces, None, &ListOptions::default()).await?;
    assert_eq!(again.items, list.items);

    t.stop().await;
    Ok(())
}

#[tokio::test]
async fn create_fills_in_uid_creation_time_generated_name_and_the_store_revision() -> Result<()> {
    let t = TestRegistry::start().await?;
    let config_maps = rt("configmaps");

    eprintln!("--- a configmap with a name");
    let before = jiff::Timestamp::now().as_second();
    let created = t.create(config_maps, "default", config_map("settings", json!({}), "v")).await?;
    assert_eq!(name(&created), "settings");
    assert_eq!(text(&created, "/metadata/namespace"), "default");
    let uid = text(&created, "/metadata/uid");
    assert_eq!(uid.len(), 36, "uid {uid:?}");
    assert_eq!(uid.matches('-').count(), 4, "uid {uid:?}");
    let created_at: jiff::Timestamp = text(&created, "/metadata/creationTimestamp").parse()?;
    assert!((before - 1..=jiff::Timestamp::now().as_second()).contains(&created_at.as_second()));
    assert_eq!(rv(&created), t.store.revision(), "resourceVersion is the store revision of the write");
    assert!(created.pointer("/metadata/generation").is_none(), "configmaps have no generation: {created}");
    let read = t.registry.get(config_maps, Some("default"), "settings", ReadAt::Latest).await?;
    assert_eq!(read, created);

    eprintln!("--- a second create gets another uid and a later revision");
    let other = t.create(config_maps, "default", config_map("other", json!({}), "v")).await?;
    assert_ne!(text(&other, "/metadata/uid"), uid);
    assert!(rv(&other) > rv(&created));

    eprintln!("--- generateName picks a fresh name with a five-character suffix");
    let mut generated = Vec::new();
    for _ in 0..3 {
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "job-"}});
        let created = t.create(config_maps, "default", object).await?;
        let generated_name = name(&created).to_string();
        assert!(generated_name.starts_with("job-") && generated_name.len() == 9, "{generated_name}");
        t.registry.get(config_maps, Some("default"), &generated_name, ReadAt::Latest).await?;
        generated.push(generated_name);
    }
    assert_eq!(generated.iter().collect::<BTreeSet<_>>().len(), 3, "{generated:?}");

    eprintln!("--- client-set resourceVersion, uid-like bookkeeping and pod status are replaced");
    let mut object = pod("web", None, json!({}));
    object["metadata"]["resourceVersion"] = json!("12345");
    object["metadata"]["deletionTimestamp"] = json!("2020-01-01T00:00:00Z");
    object["status"] = json!({"phase": "Running"});
    let created = t.create(rt("pods"), "default", object).await?;
    assert_eq!(rv(&created), t.store.revision());
    assert!(created.pointer("/metadata/deletionTimestamp").is_none(), "{created}");
    assert_eq!(text(&created, "/status/phase"), "Pending");
    assert_eq!(created.pointer("/metadata/generation"), Some(&json!(1)));

    t.stop().await;
    Ok(())
}

#[tokio::test]
async fn create_refuses_a_taken_name_a_missing_namespace_and_a_terminating_one() -> Result<()> {
    let t = TestRegistry::start().await?;
    let config_maps = rt("configmaps");
    let options = WriteOptions::default();

    eprintln!("--- the same name twice");
    t.create(config_maps, "default", config_map("once", json!({}), "first")).await?;
    let revision = t.store.revision();
    let again =
        t.registry.create(config_maps, Some("default"), config_map("once", json!({}), "second"), &options).await;
    assert!(matches!(&again, Err(RegistryError::AlreadyExists { name, .. }) if name == "once"), "{again:?}");
    assert_eq!(t.store.revision(), revision);
    let stored = t.registry.get(config_maps, Some("default"), "once", ReadAt::Latest).await?;
    assert_eq!(text(&stored, "/data/key"), "first");

    eprintln!("--- a namespace that does not exist");
    let missing = t.registry.create(config_maps, Some("nowhere"), config_map("x", json!({}), "v"), &options).await;
    assert!(
        matches!(&missing, Err(RegistryError::NotFound { resource, name }) if resource == "namespaces" && name == "nowhere"),
        "{missing:?}"
    );

    eprintln!("--- a namespace being deleted");
    t.namespace("doomed").await?;
    t.create(config_maps, "doomed", config_map("before", json!({}), "v")).await?;
    let deleted = t.registry.delete(rt("namespaces"), None, "doomed", &DeleteOptions::default()).await?;
    assert!(!deleted.gone);
    let refused = t.registry.create(config_maps, Some("doomed"), config_map("after", json!({}), "v"), &options).await;
    match &refused {
        Err(RegistryError::Forbidden(message)) => assert!(message.contains("being terminated"), "{message}"),
        other => bail!("expected Forbidden, got {other:?}"),
    }

    t.stop().await;
    Ok(())
}

#[tokio::test]
async fn update_with_a_stale_resource_version_conflicts_and_without_one_applies() -> Result<()> {
    let t = TestRegistry::start().await?;
    let config_maps = rt("configmaps");
    let options = WriteOptions::default();
    let created = t.create(config_maps, "default", config_map("cm", json!({}), "1")).await?;

    eprintln!("--- an update carrying the current resourceVersion");
    let mut next = created.clone();
    next["data"]["key"] = json!("2");
    let updated = t.registry.update(config_maps, Some("default"), "cm", next, Scope::Main, &options).await?.object;
    assert_eq!(text(&updated, "/data/key"), "2");
    assert!(rv(&updated) > rv(&created));
    assert_eq!(rv(&updated), t.store.revision());
    assert_eq!(text(&updated, "/metadata/uid"), text(&created, "/metadata/uid"));
    assert_eq!(text(&updated, "/metadata/creationTimestamp"), text(&created, "/metadata/creationTimestamp"));

    eprintln!("--- an update carrying the previous resourceVersion");
    let mut stale = created.clone();
    stale["data"]["key"] = json!("stale");
    let conflict = t.registry.update(config_maps, Some("default"), "cm", stale, Scope::Main, &options).await;
    assert!(matches!(&conflict, Err(RegistryError::Conflict { .. })), "{conflict:?}");
    let stored = t.registry.get(config_maps, Some("default"), "cm", ReadAt::Latest).await?;
    assert_eq!(text(&stored, "/data/key"), "2");

    eprintln!("--- an update without a resourceVersion applies to the current version");
    let mut blind = created.clone();
    if let Some(meta) = blind["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    blind["data"]["key"] = json!("3");
    let updated = t.registry.update(config_maps, Some("default"), "cm", blind, Scope::Main, &options).await?.object;
    assert_eq!(text(&updated, "/data/key"), "3");

    eprintln!("--- an empty resourceVersion is no precondition either (as in Kubernetes)");
    let mut empty = created.clone();
    empty["metadata"]["resourceVersion"] = json!("");
    empty["data"]["key"] = json!("4");
    let updated = t.registry.update(config_maps, Some("default"), "cm", empty, Scope::Main, &options).await?.object;
    assert_eq!(text(&updated, "/data/key"), "4");

    eprintln!("--- update_with and its precondition");
    let current = rv(&updated).to_string();
    let changed = t
        .registry
        .update_with(
            config_maps,
            Some("default"),
            "cm",
            Scope::Main,
            &options,
            |o| {
                let mut o = o.clone();
                o["data"]["key"] = json!("5");
                Ok(o)
            },
            Some(current.clone()),
        )
        .await?;
    assert_eq!(text(&changed.object, "/data/key"), "5");
    let late = t
        .registry
        .update_with(config_maps, Some("default"), "cm", Scope::Main, &options, |o| Ok(o.clone()), Some(current))
        .await;
    assert!(matches!(&late, Err(RegistryError::Conflict { .. })), "{late:?}");

    eprintln!("--- an update that changes nothing writes nothing");
    let revision = t.store.revision();
    let same =
        t.registry.update(config_maps, Some("default"), "cm", changed.object.clone(), Scope::Main, &options).await?;
    assert_eq!(t.store.revision(), revision);
    assert_eq!(rv(&same.object), rv(&changed.object));

    eprintln!("--- an update of a missing object");
    let missing = t
        .registry
        .update(config_maps, Some("default"), "ghost", config_map("ghost", json!({}), "v"), Scope::Main, &options)
        .await;
    assert!(matches!(&missing, Err(RegistryError::NotFound { .. })), "{missing:?}");

    t.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_deployment_spec_change_bumps_the_generation_and_a_label_change_does_not() -> Result<()> {
    let t = TestRegistry::start().await?;
    let deployments = rt("deployments");
    let options = WriteOptions::default();
    let created = t.create(deployments, "default", deployment("web", 1)).await?;
    assert_eq!(created.pointer("/metadata/generation"), Some(&json!(1)));

    eprintln!("--- scaling changes the spec");
    let scaled = t
        .registry
        .update_with(
            deployments,
            Some("default"),
            "web",
            Scope::Main,
            &options,
            |o| {
                let mut o = o.clone();
                o["spec"]["replicas"] = json!(3);
                Ok(o)
            },
            None,
        )
        .await?
        .object;
    assert_eq!(scaled.pointer("/spec/replicas"), Some(&json!(3)));
    assert_eq!(scaled.pointer("/metadata/generation"), Some(&json!(2)));

    eprintln!("--- a new label is metadata only");
    let mut labelled = scaled.clone();
    labelled["metadata"]["labels"]["team"] = json!("blue");
    let labelled =
        t.registry.update(deployments, Some("default"), "web", labelled, Scope::Main, &options).await?.object;
    assert_eq!(text(&labelled, "/metadata/labels/team"), "blue");
    assert_eq!(labelled.pointer("/metadata/generation"), Some(&json!(2)));
    assert!(rv(&labelled) > rv(&scaled));

    eprintln!("--- a client cannot set the generation itself");
    let mut forged = labelled.clone();
    forged["metadata"]["generation"] = json!(40);
    forged["metadata"]["annotations"] = json!({"note": "x"});
    let forged = t.registry.update(deployments, Some("default"), "web", forged, Scope::Main, &options).await?.object;
    assert_eq!(forged.pointer("/metadata/generation"), Some(&json!(2)));

    t.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_status_update_changes_only_the_status_and_a_main_update_keeps_it() -> Result<()> {
    let t = TestRegistry::start().await?;
    let deployments = rt("deployments");
    let options = WriteOptions::default();
    let created = t.create(deployments, "default", deployment("api", 2)).await?;

    eprintln!("--- status: spec and labels in the body are ignored");
    let mut body = created.clone();
    body["spec"]["replicas"] = json!(9);
    body["metadata"]["labels"]["sneaky"] = json!("yes");
    body["status"] = json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 1});
    let after_status =
        t.registry.update(deployments, Some("default"), "api", body, Scope::Status, &options).await?.object;
    assert_eq!(after_status.pointer("/spec/replicas"), Some(&json!(2)));
    assert_eq!(after_status.pointer("/status/readyReplicas"), Some(&json!(1)));
    assert!(after_status.pointer("/metadata/labels/sneaky").is_none(), "{after_status}");
    assert_eq!(after_status.pointer("/metadata/generation"), Some(&json!(1)));

    eprintln!("--- main: the status in the body is ignored");
    let mut body = after_status.clone();
    body["spec"]["replicas"] = json!(4);
    body["status"] = json!({"replicas": 99, "readyReplicas": 99});
    let after_main = t.registry.update(deployments, Some("default"), "api", body, Scope::Main, &options).await?.object;
    assert_eq!(after_main.pointer("/spec/replicas"), Some(&json!(4)));
    assert_eq!(after_main.pointer("/status"), after_status.pointer("/status"));
    assert_eq!(after_main.pointer("/metadata/generation"), Some(&json!(2)));

    eprintln!("--- a create drops the status it was sent");
    let mut with_status = deployment("fresh", 1);
    with_status["status"] = json!({"replicas": 7});
    let fresh = t.create(deployments, "default", with_status).await?;
    assert!(fresh.pointer("/status/replicas").is_none(), "{fresh}");

    t.stop().await;
    Ok(())
}

/// Reads every page of a list with `limit`, running `between` after each page but the last.
async fn all_pages(
    t: &TestRegistry,
    namespace: &str,
    limit: i64,
    mut between: impl AsyncFnMut(usize) -> Result<()>,
) -> Result<Vec<ObjectList>> {
    let mut pages = Vec::new();
    let mut token = None;
    loop {
        let options = ListOptions { limit: Some(limit), continue_token: token.clone(), ..Default::default() };
        let page = t.registry.list(rt("configmaps"), Some(namespace), &options).await?;
        token = page.continue_token.clone();
        pages.push(page);
        if token.is_none() {
            return Ok(pages);
        }
        ensure!(pages.len() < 100, "the list does not end");
        between(pages.len()).await?;
    }
}

#[tokio::test]
async fn a_paged_list_shows_the_first_page_revision_while_objects_change_between_pages() -> Result<()> {
    let t = TestRegistry::start().await?;
    let config_maps = rt("configmaps");
    t.namespace("paging").await?;
    let mut originals = Vec::new();
    for i in 0..25 {
        let created = t.create(config_maps, "paging", config_map(&format!("cm-{i:02}"), json!({}), "old")).await?;
        originals.push(name(&created).to_string());
    }

    eprintln!("--- pages of 10 while configmaps are created, changed and deleted in between");
    let pages = all_pages(&t, "paging", 10, async |page| {
        // Names that sort into the pages still to come.
        t.create(config_maps, "paging", config_map(&format!("cm-1{page}a"), json!({}), "new")).await?;
        t.create(config_maps, "paging", config_map(&format!("cm-2{page}a"), json!({}), "new")).await?;
        let mut changed = t.registry.get(config_maps, Some("paging"), "cm-23", ReadAt::Latest).await?;
        changed["data"]["key"] = json!(format!("changed after page {page}"));
        t.registry.update(config_maps, Some("paging"), "cm-23", changed, Scope::Main, &WriteOptions::default()).await?;
        if page == 1 {
            t.registry.delete(config_maps, Some("paging"), "cm-24", &DeleteOptions::default()).await?;
        }
        Ok(())
    })
    .await?;
    let sizes: Vec<usize> = pages.iter().map(|p| p.items.len()).collect();
    assert_eq!(sizes, vec![10, 10, 5]);
    let first = pages[0].revision;
    for page in &pages {
        assert_eq!(page.revision, first, "every page is read at the first page's revision");
        for item in &page.items {
            assert!(rv(item) <= first, "{item}");
            assert_eq!(text(item, "/data/key"), "old", "{item}");
        }
    }
    let listed: Vec<String> = pages.iter().flat_map(|p| names(&p.items)).collect();
    assert_eq!(listed, originals);

    eprintln!("--- a new list sees the changes");
    let now = t.registry.list(config_maps, Some("paging"), &ListOptions::default()).await?;
    assert!(now.revision > first);
    assert_eq!(now.items.len(), 25 + 4 - 1);
    assert!(!names(&now.items).contains(&"cm-24".to_string()));

    eprintln!("--- a limit larger than the list and a garbage token");
    let whole =
        t.registry.list(config_maps, Some("paging"), &ListOptions { limit: Some(100), ..Default::default() }).await?;
    assert_eq!(whole.items.len(), 28);
    assert!(whole.continue_token.is_none());
    let garbage = ListOptions { continue_token: Some("not-a-token".into()), ..Default::default() };
    let refused = t.registry.list(config_maps, Some("paging"), &garbage).await;
    assert!(matches!(&refused, Err(RegistryError::BadRequest(_))), "{refused:?}");

    eprintln!("--- a token for another namespace is refused");
    let token = pages[0].continue_token.clone();
    let elsewhere = ListOptions { continue_token: token, ..Default::default() };
    let refused = t.registry.list(config_maps, Some("default"), &elsewhere).await;
    assert!(matches!(&refused, Err(RegistryError::BadRequest(_))), "{refused:?}");

    t.stop().await;
    Ok(())
}

#[tokio::test]
async fn lists_filter_by_label_and_field_selectors_and_refuse_unsupported_fields() -> Result<()> {
    let t = TestRegistry::start().await?;
    let pods = rt("pods");
    t.namespace("sel").await?;
    t.create(pods, "sel", pod("p1", Some("node-1"), json!({"app": "web", "tier": "front"}))).await?;
    t.create(pods, "sel", pod("p2", None, json!({"app": "web", "tier": "back"}))).await?;
    t.create(pods, "sel", pod("p3", Some("node-2"), json!({"app": "db"}))).await?;
    t.create(pods, "default", pod("p4", Some("node-1"), json!({"app": "web"}))).await?;

    eprintln!("--- label selectors");
    let list = async |options: ListOptions| -> Result<Vec<String>> {
        Ok(names(&t.registry.list(pods, Some("sel"), &options).await?.items))
    };
    assert_eq!(list(labels("app=web")?).await?, ["p1", "p2"]);
    assert_eq!(list(labels("app=web,tier!=front")?).await?, ["p2"]);
    assert_eq!(list(labels("app in (db, cache)")?).await?, ["p3"]);
    assert_eq!(list(labels("!tier")?).await?, ["p3"]);
    assert!(list(labels("app=none")?).await?.is_empty());

    eprintln!("--- field selectors");
    assert_eq!(list(fields("spec.nodeName=node-1")?).await?, ["p1"]);
    assert_eq!(list(fields("spec.nodeName=")?).await?, ["p2"]);
    assert_eq!(list(fields("status.phase=Pending")?).await?, ["p1", "p2", "p3"]);
    assert_eq!(list(fields("metadata.name!=p1")?).await?, ["p2", "p3"]);
    let both = ListOptions { fields: FieldSelector::parse("spec.nodeName!=node-2")?, ..labels("app=web")? };
    assert_eq!(list(both).await?, ["p1", "p2"]);
    let everywhere = t.registry.list(pods, None, &fields("spec.nodeName=node-1")?).await?;
    assert_eq!(names(&everywhere.items), ["p4", "p1"], "all namespaces, in key order");

    eprintln!("--- a selector with a limit pages through the matches");
    let mut token = None;
    let mut matched = Vec::new();
    for _ in 0..5 {
        let options = ListOptions { limit: Some(1), continue_token: token.clone(), ..labels("app=web")? };
        let page = t.registry.list(pods, Some("sel"), &options).await?;
        assert!(page.items.len() <= 1);
        matched.extend(names(&page.items));
        token = page.continue_token;
        if token.is_none() {
            break;
        }
    }
    assert!(token.is_none());
    assert_eq!(matched, ["p1", "p2"]);

    eprintln!("--- unsupported fields");
    for (plural, selector) in
        [("pods", "spec.containers=x"), ("configmaps", "data.key=v"), ("services", "spec.ports=80")]
    {
        let refused = t.registry.list(rt(plural), Some("sel"), &fields(selector)?).await;
        match &refused {
            Err(RegistryError::BadRequest(message)) => {
                let field = selector.split('=').next().unwrap_or_default();
                assert!(message.contains(field), "{message}");
            }
            other => bail!("{plural} with {selector}: expected BadRequest, got {other:?}"),
        }
    }
    let watch = t
        .registry
        .watch(pods, Some("sel"), WatchOptions { fields: FieldSelector::parse("spec.foo=x")?, ..Default::default() })
        .await;
    assert!(matches!(&watch, Err(RegistryError::BadRequest(_))), "a watch refuses them too");

    t.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_watch_from_a_resource_version_sees_added_modified_and_deleted_in_order() -> Result<()> {
    let t = TestRegistry::start().await?;
    let config_maps = rt("configmaps");
    t.create(config_maps, "default", config_map("earlier", json!({}), "v")).await?;
    let from = t.store.revision();

    eprintln!("--- changes after the watch's revision");
    let mut watch = t
        .registry
        .watch(config_maps, Some("default"), WatchOptions { after: Some(from), ..Default::default() })
        .await?;
    let created = t.create(config_maps, "default", config_map("w", json!({}), "1")).await?;
    let mut next = created.clone();
    next["data"]["key"] = json!("2");
    let updated =
        t.registry.update(config_maps, Some("default"), "w", next, Scope::Main, &WriteOptions::default()).await?.object;
    let deleted = t.registry.delete(config_maps, Some("default"), "w", &DeleteOptions::default()).await?;
    assert!(deleted.gone);
    let delete_revision = t.store.revision();
    t.create(config_maps, "kube-system", config_map("elsewhere", json!({}), "v")).await?;

    let seen = changes(&mut watch, 3).await?;
    let kinds: Vec<ChangeType> = seen.iter().map(|c| c.kind).collect();
    assert_eq!(kinds, [ChangeType::Added, ChangeType::Modified, ChangeType::Deleted], "{:?}", summary(&seen));
    assert_eq!(seen[0].revision, rv(&created));
    assert_eq!(seen[1].revision, rv(&updated));
    assert_eq!(seen[2].revision, delete_revision);
    assert!(seen.windows(2).all(|w| w[0].revision < w[1].revision));
    for change in &seen {
        assert_eq!(name(&change.object), "w");
        assert_eq!(rv(&change.object), change.revision, "the object carries the event's revision");
    }
    assert_eq!(text(&seen[0].object, "/data/key"), "1");
    assert_eq!(text(&seen[1].object, "/data/key"), "2");
    assert_eq!(text(&seen[2].object, "/data/key"), "2", "a delete shows the object as it was");
    quiet(&mut watch).await?;

    eprintln!("--- a second watch from the same revision replays the same changes");
    let mut replay = t
        .registry
        .watch(config_maps, Some("default"), WatchOptions { after: Some(from), ..Default::default() })
        .await?;
    assert_eq!(summary(&changes(&mut replay, 3).await?), summary(&seen));

    eprintln!("--- a watch on one name");
    let one = WatchOptions {
        fields: FieldSelector::parse("metadata.name=only")?,
        after: Some(t.store.revision()),
        ..Default::default()
    };
    let mut named = t.registry.watch(config_maps, Some("default"), one).await?;
    t.create(config_maps, "default", config_map("not-this", json!({}), "v")).await?;
    t.create(config_maps, "default", config_map("only", json!({}), "v")).await?;
    let seen = changes(&mut named, 1).await?;
    assert_eq!(name(&seen[0].object), "only");

    t.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_watch_with_a_label_selector_reports_objects_leaving_as_deleted_and_entering_as_added() -> Result<()> {
    let t = TestRegistry::start().await?;
    let config_maps = rt("configmaps");
    let options = WriteOptions::default();
    let watch_options = WatchOptions {
        labels: LabelSelector::parse("app=web")?,
        after: Some(t.store.revision()),
        ..Default::default()
    };
    let mut watch = t.registry.watch(config_maps, Some("default"), watch_options).await?;
    let relabel = async |name: &str, app: &str| -> Result<Value> {
        let mut object = t.registry.get(config_maps, Some("default"), name, ReadAt::Latest).await?;
        object["metadata"]["labels"]["app"] = json!(app);
        Ok(t.registry.update(config_maps, Some("default"), name, object, Scope::Main, &options).await?.object)
    };

    eprintln!("--- a matching object, then it stops matching");
    t.create(config_maps, "default", config_map("a", json!({"app": "web"}), "v")).await?;
    let left = relabel("a", "db").await?;
    eprintln!("--- a non-matching object, then it starts matching, then it is deleted");
    t.create(config_maps, "default", config_map("b", json!({"app": "db"}), "v")).await?;
    let entered = relabel("b", "web").await?;
    t.registry.delete(config_maps, Some("default"), "b", &DeleteOptions::default()).await?;
    eprintln!("--- changes to objects that never match are not seen");
    relabel("a", "cache").await?;

    let seen = changes(&mut watch, 4).await?;
    let expected = [("ADDED", "a"), ("DELETED", "a"), ("ADDED", "b"), ("DELETED", "b")];
    let got: Vec<(String, String)> = summary(&seen).into_iter().map(|(k, n, _)| (k, n)).collect();
    assert_eq!(got, expected.map(|(k, n)| (k.to_string(), n.to_string())));
    assert_eq!(seen[1].revision, rv(&left));
    assert_eq!(rv(&seen[1].object), rv(&left), "the DELETED object carries the event's revision");
    assert_eq!(
        text(&seen[1].object, "/metadata/labels/app"),
        "web",
        "Kubernetes sends the last state the watcher was entitled to see"
    );
    assert_eq!(seen[2].revision, rv(&entered));
    assert_eq!(text(&seen[2].object, "/metadata/labels/app"), "web");
    assert!(seen.windows(2).all(|w| w[0].revision < w[1].revision));
    quiet(&mut watch).await?;

    t.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_watch_or_a_continued_list_from_a_compacted_revision_is_expired() -> Result<()> {
    let t = TestRegistry::start().await?;
    let config_maps = rt("configmaps");
    for i in 0..3 {
        t.create(config_maps, "default", config_map(&format!("c{i}"), json!({}), "v")).await?;
    }
    let early = t.store.revision() - 2;
    let first_page =
        t.registry.list(config_maps, Some("default"), &ListOptions { limit: Some(1), ..Default::default() }).await?;
    let token = first_page.continue_token.clone();
    assert!(token.is_some());
    for i in 3..6 {
        t.create(config_maps, "default", config_map(&format!("c{i}"), json!({}), "v")).await?;
    }

    eprintln!("--- compact up to the current revision");
    let compact_to = t.store.revision();
    t.store.write(Request::new(Command::Compact { revision: compact_to })).await?;

    eprintln!("--- a watch from before the compaction");
    let expired =
        t.registry.watch(config_maps, Some("default"), WatchOptions { after: Some(early), ..Default::default() }).await;
    match &expired {
        Err(RegistryError::Expired(message)) => assert!(message.contains("too old resource version"), "{message}"),
        Err(other) => bail!("expected Expired, got {other:?}"),
        Ok(_) => bail!("expected Expired, got a watch"),
    }

    eprintln!("--- a continue token from before the compaction");
    let continued = ListOptions { limit: Some(1), continue_token: token, ..Default::default() };
    let expired = t.registry.list(config_maps, Some("default"), &continued).await;
    assert!(matches!(&expired, Err(RegistryError::Expired(_))), "{expired:?}");

    eprintln!("--- a watch from the compaction point works");
    let mut watch = t
        .registry
        .watch(config_maps, Some("default"), WatchOptions { after: Some(compact_to), ..Default::default() })
        .await?;
    t.create(config_maps, "default", config_map("late", json!({}), "v")).await?;
    let seen = changes(&mut watch, 1).await?;
    assert_eq!(name(&seen[0].object), "late");

    t.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_watch_without_a_resource_version_starts_with_the_existing_objects_as_added() -> Result<()> {
    let t = TestRegistry::start().await?;
    let config_maps = rt("configmaps");
    let mut existing = Vec::new();
    for name in ["one", "two", "three"] {
        existing.push(t.create(config_maps, "default", config_map(name, json!({"app": "web"}), "v")).await?);
    }
    t.create(config_maps, "default", config_map("other", json!({"app": "db"}), "v")).await?;

    eprintln!("--- the current state first, filtered by the selector");
    let options = WatchOptions { labels: LabelSelector::parse("app=web")?, ..Default::default() };
    let mut watch = t.registry.watch(config_maps, Some("default"), options).await?;
    let seen = changes(&mut watch, 3).await?;
    assert!(seen.iter().all(|c| c.kind == ChangeType::Added), "{:?}", summary(&seen));
    let mut seen_names: Vec<&str> = seen.iter().map(|c| name(&c.object)).collect();
    seen_names.sort_unstable();
    assert_eq!(seen_names, ["one", "three", "two"]);
    for change in &seen {
        let original = existing.iter().find(|o| name(o) == name(&change.object)).expect("a created object");
        assert_eq!(change.revision, rv(original));
        assert_eq!(&change.object, original);
    }

    eprintln!("--- then changes");
    t.create(config_maps, "default", config_map("four", json!({"app": "web"}), "v")).await?;
    let next = changes(&mut watch, 1).await?;
    assert_eq!((next[0].kind, name(&next[0].object)), (ChangeType::Added, "four"));
    assert!(next[0].revision > seen.iter().map(|c| c.revision).max().unwrap_or_default());

    eprintln!("--- resourceVersion 0 means the same");
    let mut zero =
        t.registry.watch(config_maps, Some("default"), WatchOptions { after: Some(0), ..Default::default() }).await?;
    assert_eq!(changes(&mut zero, 5).await?.len(), 5);

    t.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_bound_pod_is_deleted_gracefully_and_an_unbound_one_at_once() -> Result<()> {
    let t = TestRegistry::start().await?;
    let pods = rt("pods");

    eprintln!("--- a pod on a node gets a deletionTimestamp and stays");
    t.create(pods, "default", pod("bound", Some("node-1"), json!({}))).await?;
    let first = t.registry.delete(pods, Some("default"), "bound", &DeleteOptions::default()).await?;
    assert!(!first.gone);
    assert!(first.object.pointer("/metadata/deletionTimestamp").is_some(), "{}", first.object);
    assert_eq!(first.object.pointer("/metadata/deletionGracePeriodSeconds"), Some(&json!(30)));
    let stored = t.registry.get(pods, Some("default"), "bound", ReadAt::Latest).await?;
    assert_eq!(stored.pointer("/metadata/deletionTimestamp"), first.object.pointer("/metadata/deletionTimestamp"));

    eprintln!("--- deleting it again leaves it pending");
    let again = t.registry.delete(pods, Some("default"), "bound", &DeleteOptions::default()).await?;
    assert!(!again.gone);
    t.registry.get(pods, Some("default"), "bound", ReadAt::Latest).await?;

    eprintln!("--- a grace period of 0 removes it");
    let now = t.registry.delete(pods, Some("default"), "bound", &grace(0)).await?;
    assert!(now.gone);
    let gone = t.registry.get(pods, Some("default"), "bound", ReadAt::Latest).await;
    assert!(matches!(&gone, Err(RegistryError::NotFound { .. })), "{gone:?}");

    eprintln!("--- a pod on no node goes at once");
    t.create(pods, "default", pod("unbound", None, json!({}))).await?;
    let deleted = t.registry.delete(pods, Some("default"), "unbound", &DeleteOptions::default()).await?;
    assert!(deleted.gone);
    let gone = t.registry.get(pods, Some("default"), "unbound", ReadAt::Latest).await;
    assert!(matches!(&gone, Err(RegistryError::NotFound { .. })), "{gone:?}");
    let twice = t.registry.delete(pods, Some("default"), "unbound", &DeleteOptions::default()).await;
    assert!(matches!(&twice, Err(RegistryError::NotFound { .. })), "{twice:?}");

    eprintln!("--- preconditions");
    let created = t.create(pods, "default", pod("guarded", None, json!({}))).await?;
    let wrong_uid = DeleteOptions {
        preconditions: Some(trireme_registry::Preconditions { uid: Some("nope".into()), resource_version: None }),
        ..Default::default()
    };
    let refused = t.registry.delete(pods, Some("default"), "guarded", &wrong_uid).await;
    assert!(matches!(&refused, Err(RegistryError::Conflict { .. })), "{refused:?}");
    let right = DeleteOptions {
        preconditions: Some(trireme_registry::Preconditions {
            uid: Some(text(&created, "/metadata/uid").into()),
            resource_version: Some(rv(&created).to_string()),
        }),
        ..Default::default()
    };
    assert!(t.registry.delete(pods, Some("default"), "guarded", &right).await?.gone);

    t.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_object_with_finalizers_stays_until_an_update_removes_them() -> Result<()> {
    let t = TestRegistry::start().await?;
    let config_maps = rt("configmaps");
    let mut object = config_map("held", json!({}), "v");
    object["metadata"]["finalizers"] = json!(["example.com/hold", "example.com/other"]);
    t.create(config_maps, "default", object).await?;

    eprintln!("--- delete marks it");
    let deleted = t.registry.delete(config_maps, Some("default"), "held", &DeleteOptions::default()).await?;
    assert!(!deleted.gone);
    assert!(deleted.object.pointer("/metadata/deletionTimestamp").is_some());
    let held = t.registry.get(config_maps, Some("default"), "held", ReadAt::Latest).await?;
    assert_eq!(held.pointer("/metadata/finalizers"), Some(&json!(["example.com/hold", "example.com/other"])));

    eprintln!("--- removing one finalizer keeps it");
    let mut one_left = held.clone();
    one_left["metadata"]["finalizers"] = json!(["example.com/other"]);
    let one_left = t
        .registry
        .update(config_maps, Some("default"), "held", one_left, Scope::Main, &WriteOptions::default())
        .await?;
    assert_eq!(
        one_left.object.pointer("/metadata/deletionTimestamp"),
        held.pointer("/metadata/deletionTimestamp"),
        "an update keeps the deletion timestamp"
    );

    eprintln!("--- a dry run of removing the last one removes nothing");
    let mut none_left = one_left.object.clone();
    none_left["metadata"]["finalizers"] = json!([]);
    let dry = WriteOptions { dry_run: true, ..Default::default() };
    t.registry.update(config_maps, Some("default"), "held", none_left.clone(), Scope::Main, &dry).await?;
    t.registry.get(config_maps, Some("default"), "held", ReadAt::Latest).await?;

    eprintln!("--- removing the last one removes the object");
    t.registry.update(config_maps, Some("default"), "held", none_left, Scope::Main, &WriteOptions::default()).await?;
    let gone = t.registry.get(config_maps, Some("default"), "held", ReadAt::Latest).await;
    assert!(matches!(&gone, Err(RegistryError::NotFound { .. })), "{gone:?}");

    eprintln!("--- the name is free again");
    let again = t.create(config_maps, "default", config_map("held", json!({}), "v")).await?;
    assert!(again.pointer("/metadata/deletionTimestamp").is_none());

    t.stop().await;
    Ok(())
}

#[tokio::test]
async fn services_get_distinct_cluster_ips_and_node_ports_from_their_ranges() -> Result<()> {
    let t = TestRegistry::start().await?;
    let services = rt("services");

    eprintln!("--- ClusterIP and NodePort services");
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for i in 0..12 {
        let (type_, wanted): (&str, &[i64]) = if i % 2 == 0 { ("ClusterIP", &[0]) } else { ("NodePort", &[0, 0]) };
        let created = t.create(services, "default", service(&format!("s{i}"), type_, wanted)).await?;
        let ip = cluster_ip(&created)?;
        assert!(in_service_range(ip), "{ip} is outside 10.96.0.0/12");
        assert_eq!(created.pointer("/spec/clusterIPs"), Some(&json!([ip.to_string()])));
        assert!(ips.insert(ip), "{ip} given twice");
        let node_ports = node_ports(&created);
        if type_ == "NodePort" {
            assert_eq!(node_ports.len(), 2, "{created}");
            for port in node_ports {
                assert!((30000..=32767).contains(&port), "node port {port}");
                assert!(ports.insert(port), "node port {port} given twice");
            }
        } else {
            assert!(node_ports.is_empty(), "{created}");
        }
    }

    eprintln!("--- an update that leaves the addresses out keeps them");
    let before = t.registry.get(services, Some("default"), "s1", ReadAt::Latest).await?;
    let updated = t
        .registry
        .update_with(
            services,
            Some("default"),
            "s1",
            Scope::Main,
            &WriteOptions::default(),
            |current| {
                let mut next = current.clone();
                if let Some(spec) = next["spec"].as_object_mut() {
                    spec.remove("clusterIP");
                    spec.remove("clusterIPs");
                }
                for port in next["spec"]["ports"].as_array_mut().into_iter().flatten() {
                    if let Some(port) = port.as_object_mut() {
                        port.remove("nodePort");
                    }
                }
                next["metadata"]["labels"] = json!({"changed": "yes"});
                Ok(next)
            },
            None,
        )
        .await?
        .object;
    assert_eq!(updated.pointer("/spec/clusterIP"), before.pointer("/spec/clusterIP"));
    assert_eq!(node_ports(&updated), node_ports(&before));

    eprintln!("--- the kept addresses are still held");
    let ip = text(&before, "/spec/clusterIP").to_string();
    let mut same_ip = service("same-ip", "ClusterIP", &[0]);
    same_ip["spec"]["clusterIP"] = json!(ip);
    let refused = t.registry.create(services, Some("default"), same_ip, &WriteOptions::default()).await;
    assert!(matches!(&refused, Err(RegistryError::Invalid { .. })), "{refused:?}");

    eprintln!("--- an ExternalName service gets no address");
    let external = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
        "spec": {"type": "ExternalName", "externalName": "example.com"},
    });
    let external = t.create(services, "default", external).await?;
    assert!(text(&external, "/spec/clusterIP").is_empty(), "{external}");

    t.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_taken_node_port_or_cluster_ip_is_refused_until_its_service_is_deleted() -> Result<()> {
    let t = TestRegistry::start().await?;
    let services = rt("services");
    let options = WriteOptions::default();

    eprintln!("--- a service asks for node port 30080 and an address");
    let mut first = service("first", "NodePort", &[30080]);
    first["spec"]["clusterIP"] = json!("10.96.0.50");
    let first = t.create(services, "default", first).await?;
    assert_eq!(node_ports(&first), [30080]);
    assert_eq!(text(&first, "/spec/clusterIP"), "10.96.0.50");

    eprintln!("--- another service asks for the same");
    let refused = t.registry.create(services, Some("default"), service("second", "NodePort", &[30080]), &options).await;
    match &refused {
        Err(RegistryError::Invalid { causes, .. }) => {
            assert_eq!(causes.len(), 1, "{causes:?}");
            assert_eq!(causes[0].field, "spec.ports[0].nodePort");
            assert_eq!(causes[0].reason, Reason::FieldValueInvalid);
            assert!(causes[0].message.contains("already allocated"), "{}", causes[0].message);
        }
        other => bail!("expected Invalid, got {other:?}"),
    }
    let mut same_ip = service("third", "ClusterIP", &[0]);
    same_ip["spec"]["clusterIP"] = json!("10.96.0.50");
    let refused = t.registry.create(services, Some("default"), same_ip.clone(), &options).await;
    assert!(matches!(&refused, Err(RegistryError::Invalid { .. })), "{refused:?}");

    eprintln!("--- out of range");
    let refused = t.registry.create(services, Some("default"), service("low", "NodePort", &[29999]), &options).await;
    assert!(matches!(&refused, Err(RegistryError::Invalid { .. })), "{refused:?}");
    let mut outside = service("outside", "ClusterIP", &[0]);
    outside["spec"]["clusterIP"] = json!("10.200.0.1");
    let refused = t.registry.create(services, Some("default"), outside, &options).await;
    assert!(matches!(&refused, Err(RegistryError::Invalid { .. })), "{refused:?}");
    let twice =
        t.registry.create(services, Some("default"), service("twice", "NodePort", &[30100, 30100]), &options).await;
    assert!(matches!(&twice, Err(RegistryError::Invalid { .. })), "{twice:?}");

    eprintln!("--- deleting the first service releases both");
    assert!(t.registry.delete(services, Some("default"), "first", &DeleteOptions::default()).await?.gone);
    let second = t.create(services, "default", service("second", "NodePort", &[30080])).await?;
    assert_eq!(node_ports(&second), [30080]);
    let third = t.create(services, "default", same_ip).await?;
    assert_eq!(text(&third, "/spec/clusterIP"), "10.96.0.50");

    eprintln!("--- changing a NodePort service to ClusterIP releases its node port");
    let mut to_cluster_ip = t.registry.get(services, Some("default"), "second", ReadAt::Latest).await?;
    to_cluster_ip["spec"]["type"] = json!("ClusterIP");
    let changed =
        t.registry.update(services, Some("default"), "second", to_cluster_ip, Scope::Main, &options).await?.object;
    assert!(node_ports(&changed).is_empty(), "{changed}");
    let fourth = t.create(services, "default", service("fourth", "NodePort", &[30080])).await?;
    assert_eq!(node_ports(&fourth), [30080]);

    t.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_service_creates_share_a_small_range_without_failing() -> Result<()> {
    // A /29 leaves 5 addresses for services and the node port range 5 ports: concurrent
    // creates pick the same free address and only the store's transaction tells them apart.
    let config = RegistryConfig { service_cidr: (Ipv4Addr::new(10, 0, 0, 0), 29), node_ports: (30000, 30004) };
    let t = TestRegistry::start_with(config).await?;
    let services = rt("services");

    eprintln!("--- five NodePort services at once");
    let mut tasks = Vec::new();
    for i in 0..5 {
        let registry = t.registry.clone();
        tasks.push(tokio::spawn(async move {
            let object = service(&format!("s{i}"), "NodePort", &[0]);
            registry.create(services, Some("default"), object, &WriteOptions::default()).await
        }));
    }
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for task in tasks {
        let created = task.await??.object;
        ips.insert(cluster_ip(&created)?);
        ports.extend(node_ports(&created));
    }
    assert_eq!(ips.len(), 5, "{ips:?}");
    assert_eq!(ports, (30000..=30004).collect::<BTreeSet<_>>());

    eprintln!("--- the range is full");
    let full =
        t.registry.create(services, Some("default"), service("s5", "ClusterIP", &[0]), &WriteOptions::default()).await;
    assert!(matches!(&full, Err(RegistryError::Exhausted(m)) if m.contains("serviceIP: range is full")), "{full:?}");

    t.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_deleted_namespace_terminates_and_finishing_removes_it_with_its_contents() -> Result<()> {
    let t = TestRegistry::start().await?;
    let namespaces = rt("namespaces");
    let pods = rt("pods");
    t.namespace("team").await?;
    t.create(rt("configmaps"), "team", config_map("settings", json!({}), "v")).await?;
    t.create(pods, "team", pod("loose", None, json!({}))).await?;
    t.create(pods, "team", pod("running", Some("node-1"), json!({}))).await?;
    t.create(rt("services"), "team", service("front", "NodePort", &[31000])).await?;
    t.create(rt("configmaps"), "default", config_map("bystander", json!({}), "v")).await?;

    eprintln!("--- delete: Terminating");
    let deleted = t.registry.delete(namespaces, None, "team", &DeleteOptions::default()).await?;
    assert!(!deleted.gone);
    assert_eq!(text(&deleted.object, "/status/phase"), "Terminating");
    assert!(deleted.object.pointer("/metadata/deletionTimestamp").is_some());
    let again = t.registry.delete(namespaces, None, "team", &DeleteOptions::default()).await?;
    assert!(!again.gone);
    let terminating = t.registry.list(namespaces, None, &fields("status.phase=Terminating")?).await?;
    assert_eq!(names(&terminating.items), ["team"]);

    eprintln!("--- finishing: a pod in its grace period holds the namespace");
    assert!(!t.registry.finish_namespace("team").await?);
    let left = t.registry.list(pods, Some("team"), &ListOptions::default()).await?;
    assert_eq!(names(&left.items), ["running"]);
    assert!(left.items[0].pointer("/metadata/deletionTimestamp").is_some());
    for plural in ["configmaps", "services"] {
        let list = t.registry.list(rt(plural), Some("team"), &ListOptions::default()).await?;
        assert!(list.items.is_empty(), "{plural}: {:?}", names(&list.items));
    }
    t.registry.get(namespaces, None, "team", ReadAt::Latest).await?;

    eprintln!("--- the kubelet's final delete, then finishing again");
    t.registry.delete(pods, Some("team"), "running", &grace(0)).await?;
    assert!(t.registry.finish_namespace("team").await?);
    let gone = t.registry.get(namespaces, None, "team", ReadAt::Latest).await;
    assert!(matches!(&gone, Err(RegistryError::NotFound { .. })), "{gone:?}");
    assert!(t.registry.finish_namespace("team").await?, "finishing a gone namespace is done");
    t.registry.get(rt("configmaps"), Some("default"), "bystander", ReadAt::Latest).await?;

    eprintln!("--- the service's node port was released");
    t.create(rt("services"), "default", service("reuse", "NodePort", &[31000])).await?;

    eprintln!("--- the namespace can be made again, empty");
    t.namespace("team").await?;
    assert!(t.registry.list(pods, Some("team"), &ListOptions::default()).await?.items.is_empty());

    t.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_registry_fenced_with_a_wrong_term_writes_nothing() -> Result<()> {
    let t = TestRegistry::start().await?;
    let config_maps = rt("configmaps");
    let term = t.store.term();
    let revision = t.store.revision();

    eprintln!("--- a create fenced with another term");
    let fenced = t.registry.fenced(term + 5);
    let refused = fenced
        .create(config_maps, Some("default"), config_map("fenced", json!({}), "v"), &WriteOptions::default())
        .await;
    assert!(
        matches!(&refused, Err(RegistryError::Store(StoreError::Fenced { fence, term: now })) if *fence == term + 5 && *now == term),
        "{refused:?}"
    );
    assert_eq!(t.store.revision(), revision, "nothing was written");
    let missing = t.registry.get(config_maps, Some("default"), "fenced", ReadAt::Latest).await;
    assert!(matches!(&missing, Err(RegistryError::NotFound { .. })), "{missing:?}");

    eprintln!("--- updates and deletes through it are refused too");
    t.create(config_maps, "default", config_map("kept", json!({}), "v")).await?;
    let revision = t.store.revision();
    let mut next = t.registry.get(config_maps, Some("default"), "kept", ReadAt::Latest).await?;
    next["data"]["key"] = json!("changed");
    let update = fenced.update(config_maps, Some("default"), "kept", next, Scope::Main, &WriteOptions::default()).await;
    assert!(matches!(&update, Err(RegistryError::Store(StoreError::Fenced { .. }))), "{update:?}");
    let delete = fenced.delete(config_maps, Some("default"), "kept", &DeleteOptions::default()).await;
    assert!(matches!(&delete, Err(RegistryError::Store(StoreError::Fenced { .. }))), "{delete:?}");
    assert_eq!(t.store.revision(), revision);

    eprintln!("--- fenced with the current term, writes go through");
    let current = t.registry.fenced(term);
    current.create(config_maps, Some("default"), config_map("ok", json!({}), "v"), &WriteOptions::default()).await?;

    t.stop().await;
    Ok(())
}

#[tokio::test]
async fn invalid_objects_are_refused_with_their_causes_and_not_stored() -> Result<()> {
    let t = TestRegistry::start().await?;
    let pods = rt("pods");
    let options = WriteOptions::default();
    let revision = t.store.revision();

    eprintln!("--- a pod without containers");
    let mut empty = pod("empty", None, json!({}));
    empty["spec"]["containers"] = json!([]);
    let refused = t.registry.create(pods, Some("default"), empty, &options).await;
    match &refused {
        Err(RegistryError::Invalid { kind, name, causes }) => {
            assert_eq!((kind.as_str(), name.as_str()), ("Pod", "empty"));
            let cause = causes.iter().find(|c| c.field == "spec.containers").expect("a cause for spec.containers");
            assert_eq!(cause.reason, Reason::FieldValueRequired);
        }
        other => bail!("expected Invalid, got {other:?}"),
    }

    eprintln!("--- a bad name, and neither name nor generateName");
    let refused = t.registry.create(pods, Some("default"), pod("Not_A_Name", None, json!({})), &options).await;
    assert!(
        matches!(&refused, Err(RegistryError::Invalid { causes, .. }) if causes.iter().any(|c| c.field == "metadata.name")),
        "{refused:?}"
    );
    let mut nameless = pod("", None, json!({}));
    if let Some(meta) = nameless["metadata"].as_object_mut() {
        meta.remove("name");
    }
    let refused = t.registry.create(pods, Some("default"), nameless, &options).await;
    assert!(
        matches!(&refused, Err(RegistryError::Invalid { causes, .. }) if causes.iter().any(|c| c.field == "metadata.name")),
        "{refused:?}"
    );

    eprintln!("--- the wrong kind, and a body namespace that differs from the request's");
    let refused = t.registry.create(pods, Some("default"), config_map("cm", json!({}), "v"), &options).await;
    assert!(matches!(&refused, Err(RegistryError::BadRequest(_))), "{refused:?}");
    let mut elsewhere = pod("elsewhere", None, json!({}));
    elsewhere["metadata"]["namespace"] = json!("kube-system");
    let refused = t.registry.create(pods, Some("default"), elsewhere, &options).await;
    assert!(matches!(&refused, Err(RegistryError::BadRequest(_))), "{refused:?}");
    assert_eq!(t.store.revision(), revision, "nothing was written");

    eprintln!("--- an update that breaks a stored object");
    let created = t.create(pods, "default", pod("good", None, json!({}))).await?;
    let mut broken = created.clone();
    broken["spec"]["containers"][0]["image"] = json!("");
    let refused = t.registry.update(pods, Some("default"), "good", broken, Scope::Main, &options).await;
    assert!(matches!(&refused, Err(RegistryError::Invalid { .. })), "{refused:?}");
    let stored = t.registry.get(pods, Some("default"), "good", ReadAt::Latest).await?;
    assert_eq!(rv(&stored), rv(&created));

    t.stop().await;
    Ok(())
}
