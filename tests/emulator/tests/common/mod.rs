//! Helpers shared by the emulator tests: start an emulator in-process, talk HTTP to it.
#![allow(dead_code)]

use pipefy_emulator::{
    start, EmulatorConfig, EmulatorHandle, Fixture, MemberDef, PersonalToken, User,
};
use serde_json::{json, Value};

pub const TOKEN: &str = "demo-token";

pub struct Emu {
    pub h: EmulatorHandle,
    pub http: reqwest::Client,
}

pub async fn emu() -> Emu {
    emu_with(EmulatorConfig::default()).await
}

pub async fn emu_with(cfg: EmulatorConfig) -> Emu {
    let h = start(cfg).await.expect("emulator starts");
    Emu {
        h,
        http: reqwest::Client::new(),
    }
}

/// The demo fixture plus: "bruno-token" (pipe member, not admin) and "outsider-token"
/// (a user who is member of nothing).
pub fn fixture_with_more_tokens() -> Fixture {
    let mut f = Fixture::demo();
    f.users.push(User {
        id: "1009".into(),
        name: "Olga Outsider".into(),
        email: "olga@example.com".into(),
        org_admin: false,
    });
    f.tokens.push(PersonalToken {
        token: "bruno-token".into(),
        user_id: "1002".into(),
    });
    f.tokens.push(PersonalToken {
        token: "outsider-token".into(),
        user_id: "1009".into(),
    });
    f
}

/// uuid of a field of the demo fixture.
pub fn uuid_of(repo: &str, slug: &str) -> String {
    let f = Fixture::demo();
    if let Some(p) = f.pipe(repo) {
        return p
            .all_fields()
            .find(|x| x.id == slug)
            .expect("field")
            .uuid
            .clone();
    }
    let t = f.table(repo).expect("repo");
    t.fields
        .iter()
        .find(|x| x.id == slug)
        .expect("field")
        .uuid
        .clone()
}

pub fn member(user_id: &str, role: &str) -> MemberDef {
    MemberDef {
        user_id: user_id.into(),
        role_name: role.into(),
    }
}

impl Emu {
    /// POSTs a raw JSON body to /graphql with an optional bearer token.
    pub async fn post_as(&self, token: Option<&str>, body: Value) -> reqwest::Response {
        let mut rb = self.http.post(self.h.graphql_url()).json(&body);
        if let Some(t) = token {
            rb = rb.header("Authorization", format!("Bearer {t}"));
        }
        rb.send().await.expect("request sent")
    }

    /// Runs a document as `token`, expects HTTP 200, returns the whole body.
    pub async fn gql_as(&self, token: &str, query: &str, vars: Value) -> Value {
        let r = self
            .post_as(Some(token), json!({"query": query, "variables": vars}))
            .await;
        assert_eq!(r.status().as_u16(), 200, "HTTP status");
        r.json().await.expect("json body")
    }

    pub async fn gql(&self, query: &str, vars: Value) -> Value {
        self.gql_as(TOKEN, query, vars).await
    }

    /// Runs a document and asserts it has no errors; returns `data`.
    pub async fn data(&self, query: &str, vars: Value) -> Value {
        let body = self.gql(query, vars).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// Creates a card in pipe 301 with the two required fields plus `extra` fields.
    pub async fn create_customer(&self, external_id: &str, extra: Value) -> String {
        let mut fields = vec![
            json!({"field_id": "external_id", "field_value": external_id}),
            json!({"field_id": "customer_name", "field_value": format!("Customer {external_id}")}),
        ];
        if let Value::Object(m) = extra {
            for (k, v) in m {
                fields.push(json!({"field_id": k, "field_value": v}));
            }
        }
        let d = self
            .data(
                "mutation($i: CreateCardInput!) { createCard(input: $i) { card { id } } }",
                json!({"i": {"pipe_id": "301", "fields_attributes": fields}}),
            )
            .await;
        d["createCard"]["card"]["id"]
            .as_str()
            .expect("card id")
            .to_string()
    }
}

/// The first error's `extensions.code`.
pub fn code(body: &Value) -> String {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The first error's message.
pub fn message(body: &Value) -> String {
    body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The demo fixture with attachment fields (see [`Fixture::demo_with_attachments`]).
pub fn fixture_with_attachments() -> Fixture {
    Fixture::demo_with_attachments()
}
