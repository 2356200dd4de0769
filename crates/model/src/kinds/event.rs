//! Events, in both API groups: `v1` Event (the involved object under `involvedObject`) and `events.k8s.io/v1` Event (under `regarding`), stored apart, printed and selected alike.
use k8s_openapi::api::core::v1::Event;
use serde_json::Value;

use super::prelude::*;

/// How events are served.
const RES: &ResourceType = &ResourceType {
    group: "",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    short_names: &["ev"],
    namespaced: true,
    subresources: &[],
    categories: &[],
    storage: "events",
};

/// How events are served.
const RES_EVENTS_V1: &ResourceType = &ResourceType {
    group: "events.k8s.io",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    short_names: &["ev"],
    namespaced: true,
    subresources: &[],
    categories: &[],
    storage: "events.k8s.io",
};

/// The events kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Events;

impl Kind for Events {
    type Object = Event;
    const RESOURCE: &'static ResourceType = RES;
    const FIELD_CONVERSION: bool = true;

    fn columns() -> &'static [Column] {
        EVENT_COLUMNS
    }

    fn cells(object: &Value, now: i128) -> Vec<Value> {
        event_cells(&EventView::core(object), now)
    }

    fn field(object: &Value, field: &str) -> Option<String> {
        fields::meta(object, field).or_else(|| event_field(object, field, "involvedObject.", &object["involvedObject"]))
    }
}

/// The events kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventsV1Events;

impl Kind for EventsV1Events {
    type Object = k8s_openapi::api::events::v1::Event;
    const RESOURCE: &'static ResourceType = RES_EVENTS_V1;
    const FIELD_CONVERSION: bool = true;

    fn columns() -> &'static [Column] {
        EVENT_COLUMNS
    }

    fn cells(object: &Value, now: i128) -> Vec<Value> {
        event_cells(&EventView::events_v1(object), now)
    }

    fn field(object: &Value, field: &str) -> Option<String> {
        fields::meta(object, field).or_else(|| event_field(object, field, "regarding.", &object["regarding"]))
    }
}

pub(crate) static EVENT_COLUMNS: &[Column] = &[
    column("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
    column("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
    column(
        "Reason",
        "string",
        "This should be a short, machine understandable string that gives the reason for the transition into the \
         object's current status.",
    ),
    column("Object", "string", "The object that this event is about."),
    wide(
        "Subobject",
        "string",
        "If referring to a piece of an object instead of an entire object, this string should contain a valid \
         JSON/Go field access statement.",
    ),
    wide("Source", "string", "The component reporting this event. Should be a short machine understandable string."),
    column("Message", "string", "A human-readable description of the status of this operation."),
    wide(
        "First Seen",
        "string",
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    ),
    wide("Count", "string", "The number of times this event has occurred."),
    Column { name: "Name", kind: "string", format: "name", description: NAME_DOC, priority: 1 },
];

/// The fields of an Event the printer reads, from either core/v1 or events.k8s.io/v1.
pub(crate) struct EventView<'a> {
    name: &'a Value,
    last_timestamp: &'a Value,
    first_timestamp: &'a Value,
    event_time: &'a Value,
    series: &'a Value,
    count: &'a Value,
    object: &'a Value,
    kind: &'a str,
    reason: &'a Value,
    source: &'a Value,
    reporting_controller: &'a Value,
    reporting_instance: &'a Value,
    message: &'a Value,
}

impl<'a> EventView<'a> {
    fn core(event: &'a Value) -> EventView<'a> {
        EventView {
            name: &event["metadata"]["name"],
            last_timestamp: &event["lastTimestamp"],
            first_timestamp: &event["firstTimestamp"],
            event_time: &event["eventTime"],
            series: &event["series"],
            count: &event["count"],
            object: &event["involvedObject"],
            kind: str_of(&event["type"]),
            reason: &event["reason"],
            source: &event["source"],
            reporting_controller: &event["reportingComponent"],
            reporting_instance: &event["reportingInstance"],
            message: &event["message"],
        }
    }

    fn events_v1(event: &'a Value) -> EventView<'a> {
        EventView {
            name: &event["metadata"]["name"],
            last_timestamp: &event["deprecatedLastTimestamp"],
            first_timestamp: &event["deprecatedFirstTimestamp"],
            event_time: &event["eventTime"],
            series: &event["series"],
            count: &event["deprecatedCount"],
            object: &event["regarding"],
            kind: str_of(&event["type"]),
            reason: &event["reason"],
            source: &event["deprecatedSource"],
            reporting_controller: &event["reportingController"],
            reporting_instance: &event["reportingInstance"],
            message: &event["note"],
        }
    }
}

pub(crate) fn event_cells(event: &EventView<'_>, now: i128) -> Vec<Value> {
    let first_seen = match timestamp(event.first_timestamp) {
        Some(t) => since_nanos(t, now),
        None => since(event.event_time, now),
    };
    let mut last_seen = match timestamp(event.last_timestamp) {
        Some(t) => since_nanos(t, now),
        None => first_seen.clone(),
    };
    let mut count = int(event.count);
    if event.series.is_object() {
        last_seen = since(&event.series["lastObservedTime"], now);
        count = int(&event.series["count"]);
    } else if count == 0 {
        // Singleton events don't have a count set in the new API.
        count = 1;
    }
    let kind = str_of(&event.object["kind"]).to_lowercase();
    let target = match str_of(&event.object["name"]) {
        "" => kind,
        object_name => format!("{kind}/{object_name}"),
    };
    // formatEventSource: component (else reportingController), then ", host" (else reportingInstance).
    let component = Some(str_of(&event.source["component"]))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| str_of(event.reporting_controller));
    let host = Some(str_of(&event.source["host"]))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| str_of(event.reporting_instance));
    let source = if host.is_empty() { component.to_string() } else { format!("{component}, {host}") };
    vec![
        last_seen.into(),
        event.kind.into(),
        text(event.reason).into(),
        target.into(),
        text(&event.object["fieldPath"]).into(),
        source.into(),
        str_of(event.message).trim().into(),
        first_seen.into(),
        count.into(),
        text(event.name).into(),
    ]
}

/// Event fields (`ToSelectableFields` in `pkg/registry/core/event/strategy.go`), with the
/// involved object under `prefix` (`involvedObject.` in core/v1, `regarding.` in events.k8s.io).
pub(crate) fn event_field(event: &Value, field: &str, prefix: &str, object: &Value) -> Option<String> {
    let core = prefix == "involvedObject.";
    if let Some(sub) = field.strip_prefix(prefix) {
        return match sub {
            "kind" | "namespace" | "name" | "uid" | "apiVersion" | "resourceVersion" | "fieldPath" => {
                Some(text(&object[sub]))
            }
            _ => None,
        };
    }
    let (reporting_label, reporting, source) = if core {
        ("reportingComponent", &event["reportingComponent"], &event["source"])
    } else {
        ("reportingController", &event["reportingController"], &event["deprecatedSource"])
    };
    match field {
        "reason" => Some(text(&event["reason"])),
        "type" => Some(text(&event["type"])),
        "source" => {
            let component = text(&source["component"]);
            Some(if component.is_empty() { text(reporting) } else { component })
        }
        f if f == reporting_label => Some(text(reporting)),
        _ => None,
    }
}
