//! The frame every console page shares (navigation, sign-out, styles),
//! the refusal page and the sign-in form.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

/// A page of the console: its title and which navigation entry it is.
pub(crate) struct Page {
    title: String,
    nav: Option<&'static str>,
    csrf: Option<String>,
}

const NAV: [(&str, &str); 7] = [
    ("Overview", "/console/"),
    ("Sources", "/console/sources"),
    ("Events", "/console/events"),
    ("Subscribers", "/console/subscribers"),
    ("Attempts", "/console/attempts"),
    ("Dead letters", "/console/dead-letters"),
    ("Replay", "/console/replay"),
];

impl Page {
    /// A page of a signed-in session, whose forms carry `csrf`.
    pub(crate) fn new(title: impl Into<String>, nav: &'static str, csrf: &str) -> Self {
        Self { title: title.into(), nav: Some(nav), csrf: Some(csrf.to_owned()) }
    }

    pub(crate) fn bare(title: &str) -> Self {
        Self { title: title.into(), nav: None, csrf: None }
    }

    pub(crate) fn render(&self, body: Markup) -> Html<String> {
        Html(
            html! {
                (DOCTYPE)
                html lang="en" {
                    head {
                        meta charset="utf-8";
                        meta name="viewport" content="width=device-width, initial-scale=1";
                    link rel="icon" href="data:,";
                        title { (self.title) " · hookbridge console" }
                        link rel="stylesheet" href="/console/assets/console.css";
                        script src="/console/assets/console.js" defer {}
                    }
                    body {
                        a.skip href="#main" { "Skip to the content" }
                        header {
                            span.brand { "hookbridge" }
                            @if let Some(current) = self.nav {
                                nav aria-label="Console" {
                                    ul {
                                        @for (name, href) in NAV {
                                            li { a href=(href) aria-current=[(name == current).then_some("page")] { (name) } }
                                        }
                                        li { a href="/console/tail" aria-current=[(current == "Live tail").then_some("page")] { "Live tail" } }
                                    }
                                }
                            }
                            @if let Some(csrf) = &self.csrf {
                                form method="post" action="/console/logout" {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button.secondary type="submit" { "Sign out" }
                                }
                            }
                        }
                        main id="main" {
                            h1 { (self.title) }
                            (body)
                        }
                    }
                }
            }
            .into_string(),
        )
    }
}

/// A page saying why an action or request was refused.
pub(crate) fn refused(status: StatusCode, why: &str) -> Response {
    let page = Page::bare("Refused").render(html! {
        p.message.error role="alert" { (why) }
        p { a href="/console/" { "Back to the console" } }
    });
    (status, page).into_response()
}

pub(crate) fn login_form(error: Option<&str>, disabled: bool) -> Markup {
    html! {
        div.login {
            @if let Some(error) = error {
                p.message.error role="alert" id="login-error" { (error) }
            }
            @if disabled {
                p.message { "The console needs the admin token, and none is configured: set " code { "admin.token" } "." }
            }
            form.stack method="post" action="/console/login" {
                input type="text" name="username" value="admin" autocomplete="username" hidden;
                label for="token" { "Admin token" }
                input id="token" name="token" type="password" autocomplete="current-password" required autofocus;
                button type="submit" { "Sign in" }
            }
            p.quiet { "The token is the configuration's " code { "admin.token" } ". The session ends after 12 hours unused, or when you sign out." }
        }
    }
}
