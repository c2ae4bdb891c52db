//! The console's request handlers: pages, the live table and the writes, each a thin layer
//! over `cluster` (the API server's answers) and `html` (how they look).

use std::{convert::Infallible, time::Duration};

use axum::{
    Json,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{
        Html, IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::{Stream, StreamExt as _};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::{
    ConsoleState,
    cluster::{self, Action, Kind, NewToken, Scope},
    html,
};

const SCRIPT: &str = include_str!("assets/console.js");
const STYLESHEET: &str = include_str!("assets/console.css");

/// `/assets/console.js`.
pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

/// `/assets/console.css`.
pub async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLESHEET,
    )
        .into_response()
}

/// `/`: the scopes the user administers.
pub async fn start(State(state): State<ConsoleState>) -> Response {
    match cluster::administered(&state.client, &state.namespace).await {
        Ok(found) => Html(html::start(&state.identity, &found)).into_response(),
        Err(message) => error(
            &state,
            StatusCode::BAD_GATEWAY,
            "Manage Access Tokens",
            &message,
        ),
    }
}

fn error(state: &ConsoleState, status: StatusCode, heading: &str, message: &str) -> Response {
    (
        status,
        Html(html::error_page(&state.identity, heading, message)),
    )
        .into_response()
}

/// The scope of a path, or the page to answer with instead.
async fn scope_of(state: &ConsoleState, kind: &str, name: &str) -> Result<Scope, Response> {
    let Some(kind) = Kind::from_resource(kind) else {
        return Err(error(
            state,
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such page.",
        ));
    };
    cluster::load_scope(&state.client, kind, name)
        .await
        .map_err(|message| {
            error(
                state,
                StatusCode::FORBIDDEN,
                &format!("{} {name}", kind.label()),
                &message,
            )
        })
}

/// The scope `kind`/`name` and its token table's rows as of `now`, or the error page.
async fn scope_rows(
    state: &ConsoleState,
    kind: &str,
    name: &str,
    now: Timestamp,
) -> Result<(Scope, String), Response> {
    let scope = scope_of(state, kind, name).await?;
    let (tokens, errors) = cluster::tokens(&state.client, &scope).await;
    let rows = html::rows(&tokens, &errors, &scope, now);
    Ok((scope, rows))
}

/// `/organizations/NAME`, `/groups/NAME`: the "Access Tokens" tab.
pub async fn tokens_tab(
    State(state): State<ConsoleState>,
    Path((kind, name)): Path<(String, String)>,
) -> Response {
    let now = Timestamp::now();
    match scope_rows(&state, &kind, &name, now).await {
        Ok((scope, rows)) => {
            Html(html::tokens_tab(&state.identity, &scope, &rows, now)).into_response()
        }
        Err(page) => page,
    }
}

/// `/organizations/NAME/groups`: the "Groups" tab.
pub async fn groups_tab(State(state): State<ConsoleState>, Path(name): Path<String>) -> Response {
    let scope = match scope_of(&state, "organizations", &name).await {
        Ok(scope) => scope,
        Err(page) => return page,
    };
    let (groups, note) = cluster::groups_of(&state.client, &name, &state.namespace).await;
    Html(html::groups_tab(
        &state.identity,
        &scope,
        &groups,
        note.as_deref(),
    ))
    .into_response()
}

/// The table body alone, for the live update.
pub async fn rows(
    State(state): State<ConsoleState>,
    Path((kind, name)): Path<(String, String)>,
) -> Response {
    match scope_rows(&state, &kind, &name, Timestamp::now()).await {
        Ok((_, rows)) => Html(rows).into_response(),
        Err(page) => page,
    }
}

/// Server-sent events: `change` whenever a watch sees an AccessToken of the scope's
/// namespaces change (the page then fetches the rows again).
pub async fn events(
    State(state): State<ConsoleState>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Response> {
    let scope = scope_of(&state, &kind, &name).await?;
    let changes = cluster::changes(&state.client, &scope.namespaces)
        .map(|()| Ok(Event::default().event("change").data("")));
    Ok(Sse::new(changes).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn failure(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// Create: the token's value in the answer's body (never in a URL, never logged).
pub async fn create(
    State(state): State<ConsoleState>,
    Path((kind, name)): Path<(String, String)>,
    Json(new): Json<NewToken>,
) -> Response {
    let scope = match scope_of(&state, &kind, &name).await {
        Ok(scope) => scope,
        Err(page) => return page,
    };
    match cluster::create(&state.client, &scope, &new).await {
        Ok(value) => {
            eprintln!("created AccessToken {}/{}", new.namespace, new.name);
            Json(json!({"value": value, "namespace": new.namespace, "name": new.name}))
                .into_response()
        }
        Err(message) => failure(StatusCode::UNPROCESSABLE_ENTITY, message),
    }
}

/// The Status menu's actions.
pub async fn act(
    State(state): State<ConsoleState>,
    Path((namespace, name, action)): Path<(String, String, String)>,
) -> Response {
    let Some(action) = Action::from_path(&action) else {
        return failure(StatusCode::NOT_FOUND, format!("No action {action:?}."));
    };
    match cluster::act(&state.client, &namespace, &name, action).await {
        Ok(()) => {
            eprintln!("{action:?} AccessToken {namespace}/{name}");
            Json(json!({"ok": true})).into_response()
        }
        Err(message) => failure(StatusCode::UNPROCESSABLE_ENTITY, message),
    }
}
