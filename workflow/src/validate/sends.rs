//! The checks of a `send_template` step: its parameters' expressions, and,
//! with a catalogue, its number, template, language, body, header and
//! buttons against what the template takes.

use std::collections::{BTreeMap, BTreeSet};

use super::Checker;
use crate::catalog::{ButtonNeed, Catalog, HeaderNeed, TemplateNeeds};
use crate::located::Located;
use crate::model::*;
use crate::{closest, list};

impl Checker<'_> {
    pub(super) fn send_template(&mut self, send: &SendTemplate, earlier: &BTreeSet<&str>) {
        let mut texts: Vec<Located<String>> = Vec::new();
        if let Some(header) = &send.header {
            match &header.value {
                HeaderParam::Text(text) => texts.push(Located::new(text.clone(), header.pos)),
                HeaderParam::Media(media) => {
                    let links = [&media.image, &media.video, &media.document];
                    if links.iter().filter(|l| l.is_some()).count() != 1 {
                        self.report(header.pos, "a media header takes exactly one of `image`, `video`, `document`");
                    }
                    for link in links.into_iter().flatten() {
                        texts.push(Located::new(link.clone(), header.pos));
                    }
                }
            }
        }
        if let Some(body) = &send.body {
            match &body.value {
                Params::Positional(values) => texts.extend(values.iter().map(|v| Located::new(v.clone(), body.pos))),
                Params::Named(values) => texts.extend(values.values().map(|v| Located::new(v.clone(), body.pos))),
            }
        }
        for button in &send.buttons {
            let values = [&button.text, &button.payload, &button.coupon_code];
            if values.iter().filter(|v| v.is_some()).count() != 1 {
                self.report(button.pos, "a button parameter takes exactly one of `text`, `payload`, `coupon_code`");
            }
            texts.extend(values.into_iter().flatten().map(|v| Located::new(v.clone(), button.pos)));
        }
        if let Some(window) = &send.when_window_open {
            texts.push(window.text.clone());
        }
        for text in &texts {
            self.expression(text, earlier);
        }
        self.against_catalog(send);
    }

    fn against_catalog(&mut self, send: &SendTemplate) {
        let Some(catalog) = self.catalog else { return };
        let name = &send.template;
        if name.starts_with("sample_") {
            self.report(
                name.pos,
                format!("template `{}` is one of Meta's sample templates, which Kairo never sends", **name),
            );
            return;
        }
        let Some((account, number)) = catalog.find_number(&send.number) else {
            self.unknown_number(&send.number, catalog);
            return;
        };
        let same_name: Vec<_> = account.templates.iter().filter(|t| t.name == **name).collect();
        if same_name.is_empty() {
            let names: BTreeSet<&str> =
                account.templates.iter().map(|t| t.name.as_str()).filter(|n| !n.starts_with("sample_")).collect();
            let hint =
                closest(name, names.iter().copied()).map(|b| format!(": did you mean `{b}`?")).unwrap_or_default();
            self.report(
                name.pos,
                format!("unknown template `{}` on number {}{hint}", **name, number.display_phone_number),
            );
            return;
        }
        let Some(template) = same_name.iter().find(|t| t.language == *send.language) else {
            let languages: Vec<&str> = same_name.iter().map(|t| t.language.as_str()).collect();
            self.report(
                send.language.pos,
                format!(
                    "template `{}` has no language `{}`; it has {}",
                    **name,
                    *send.language,
                    list(languages.into_iter())
                ),
            );
            return;
        };
        if template.status != "APPROVED" {
            self.report(
                name.pos,
                format!(
                    "template `{}` ({}) is {}, not APPROVED: only approved templates can be sent",
                    **name, template.language, template.status
                ),
            );
        }
        let needs = template.needs();
        self.template_body(send, &needs);
        self.template_header(send, &needs);
        self.template_buttons(send, &needs);
    }

    /// The body parameters a send gives against those its template takes.
    fn template_body(&mut self, send: &SendTemplate, needs: &TemplateNeeds) {
        let name = &send.template;
        let at = send.body.as_ref().map_or(name.pos, |b| b.pos);
        match (&send.body, needs.named) {
            (None, _) if !needs.body.is_empty() => self.report(
                name.pos,
                format!(
                    "template `{}` takes {} body parameters ({}); add `body`",
                    **name,
                    needs.body.len(),
                    list(needs.body.iter().map(String::as_str))
                ),
            ),
            (None, _) => {}
            (Some(body), false) => match &body.value {
                Params::Positional(values) if values.len() != needs.body.len() => self.report(
                    at,
                    format!("template `{}` takes {} body parameters, found {}", **name, needs.body.len(), values.len()),
                ),
                Params::Positional(_) => {}
                Params::Named(_) => self.report(
                    at,
                    format!("template `{}` uses positional parameters: write `body` as a list, in order", **name),
                ),
            },
            (Some(body), true) => match &body.value {
                Params::Named(values) => {
                    let given: BTreeSet<String> = values.keys().cloned().collect();
                    let missing: Vec<&str> = needs.body.difference(&given).map(String::as_str).collect();
                    let unknown: Vec<&str> = given.difference(&needs.body).map(String::as_str).collect();
                    if !missing.is_empty() {
                        self.report(
                            at,
                            format!("template `{}` needs body parameter(s) {}", **name, list(missing.into_iter())),
                        );
                    }
                    if !unknown.is_empty() {
                        self.report(
                            at,
                            format!(
                                "template `{}` has no body parameter(s) {}; it takes {}",
                                **name,
                                list(unknown.into_iter()),
                                list(needs.body.iter().map(String::as_str))
                            ),
                        );
                    }
                }
                Params::Positional(_) => self.report(
                    at,
                    format!(
                        "template `{}` uses named parameters: write `body` as a map of {}",
                        **name,
                        list(needs.body.iter().map(String::as_str))
                    ),
                ),
            },
        }
    }

    /// The header parameter a send gives against its template's header.
    fn template_header(&mut self, send: &SendTemplate, needs: &TemplateNeeds) {
        let name = &send.template;
        match (&needs.header, &send.header) {
            (HeaderNeed::None, Some(header)) => {
                self.report(header.pos, format!("template `{}` has no header parameter: remove `header`", **name))
            }
            (HeaderNeed::Text(_), None) => {
                self.report(name.pos, format!("template `{}` needs a text `header` parameter", **name))
            }
            (HeaderNeed::Media(kind), None) => self.report(
                name.pos,
                format!(
                    "template `{}` has a {} header: add `header: {{{}: <link>}}`",
                    **name,
                    kind,
                    kind.to_lowercase()
                ),
            ),
            (HeaderNeed::Text(_), Some(header)) if !matches!(header.value, HeaderParam::Text(_)) => {
                self.report(header.pos, format!("template `{}` has a text header: write `header` as text", **name))
            }
            (HeaderNeed::Media(kind), Some(header)) if matches!(header.value, HeaderParam::Text(_)) => self.report(
                header.pos,
                format!(
                    "template `{}` has a {} header: write `header: {{{}: <link>}}`",
                    **name,
                    kind,
                    kind.to_lowercase()
                ),
            ),
            _ => {}
        }
    }

    /// The button parameters a send gives against its template's buttons.
    fn template_buttons(&mut self, send: &SendTemplate, needs: &TemplateNeeds) {
        let name = &send.template;
        let given: BTreeMap<usize, &Located<ButtonParam>> = send.buttons.iter().map(|b| (b.index, b)).collect();
        for (index, need) in &needs.buttons {
            let missing = !given.contains_key(index);
            match need {
                ButtonNeed::UrlSuffix if missing => self.report(
                    name.pos,
                    format!("template `{}` button {index} is a URL with a variable: add `buttons: [{{index: {index}, text: …}}]`", **name),
                ),
                ButtonNeed::CouponCode if missing => self.report(
                    name.pos,
                    format!("template `{}` button {index} is a copy-code button: add `buttons: [{{index: {index}, coupon_code: …}}]`", **name),
                ),
                _ => {}
            }
        }
        for (index, button) in given {
            if !needs.buttons.contains_key(&index) {
                self.report(button.pos, format!("template `{}` has no button {index} that takes a parameter", **name));
            }
        }
    }

    fn unknown_number(&mut self, reference: &Located<String>, catalog: &Catalog) {
        let known: Vec<&str> = catalog.numbers().map(|n| n.display_phone_number.as_str()).collect();
        let known = if known.is_empty() {
            "none are synced (run `kairo sync` or pass --catalog)".to_string()
        } else {
            list(known.into_iter())
        };
        self.report(reference.pos, format!("unknown sending number `{}`; known numbers: {known}", **reference));
    }

    pub(super) fn number(&mut self, reference: &Located<String>) {
        if reference.trim().is_empty() {
            self.report(reference.pos, "a business number is empty");
            return;
        }
        if let Some(catalog) = self.catalog
            && catalog.find_number(reference).is_none()
        {
            self.unknown_number(reference, catalog);
        }
    }
}
