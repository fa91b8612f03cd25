//! Themes: TOML files in `themes/` (built in) or in the config dir (`themes/NAME.toml`).
//! `NO_COLOR` gives the mono theme. The selection is always reverse video too, so it stays
//! visible without any colour.

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;
use std::str::FromStr;

const BUILT_IN: &[(&str, &str)] = &[
    ("default", include_str!("../../themes/default.toml")),
    ("light", include_str!("../../themes/light.toml")),
    ("16-colour", include_str!("../../themes/16-colour.toml")),
    ("mono", include_str!("../../themes/mono.toml")),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    name: String,
    text: String,
    muted: String,
    accent: String,
    selected_fg: String,
    selected_bg: String,
    ok: String,
    warning: String,
    error: String,
    user: String,
    assistant: String,
    tool: String,
    border: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub name: String,
    pub text: Style,
    pub muted: Style,
    pub accent: Style,
    pub selected: Style,
    pub ok: Style,
    pub warning: Style,
    pub error: Style,
    pub user: Style,
    pub assistant: Style,
    pub tool: Style,
    pub border: Style,
}

fn color(name: &str, value: &str) -> Result<Color, String> {
    Color::from_str(value).map_err(|_| {
        format!(
            "theme colour {name} = {value:?} is not a colour (a name like \"cyan\", or \"#rrggbb\")"
        )
    })
}

impl Theme {
    pub fn parse(text: &str) -> Result<Theme, String> {
        let f: ThemeFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let fg = |name: &str, v: &str| color(name, v).map(|c| Style::default().fg(c));
        Ok(Theme {
            text: fg("text", &f.text)?,
            muted: fg("muted", &f.muted)?,
            accent: fg("accent", &f.accent)?.add_modifier(Modifier::BOLD),
            selected: {
                // A colour bar when the theme has one; reverse video when it has none (mono),
                // so the selection is always visible. Never both: reversing a colour bar turns
                // it into coloured text on black.
                let bg = color("selected_bg", &f.selected_bg)?;
                let style = Style::default()
                    .fg(color("selected_fg", &f.selected_fg)?)
                    .bg(bg)
                    .add_modifier(Modifier::BOLD);
                if bg == Color::Reset {
                    style.add_modifier(Modifier::REVERSED)
                } else {
                    style
                }
            },
            ok: fg("ok", &f.ok)?,
            warning: fg("warning", &f.warning)?,
            error: fg("error", &f.error)?.add_modifier(Modifier::BOLD),
            user: fg("user", &f.user)?.add_modifier(Modifier::BOLD),
            assistant: fg("assistant", &f.assistant)?,
            tool: fg("tool", &f.tool)?,
            border: fg("border", &f.border)?,
            name: f.name,
        })
    }

    /// A theme by name: a user theme in `config_dir/themes/NAME.toml`, else a built-in one.
    pub fn load(name: &str, config_dir: &std::path::Path) -> Result<Theme, String> {
        let user = config_dir.join("themes").join(format!("{name}.toml"));
        if let Ok(text) = std::fs::read_to_string(&user) {
            return Theme::parse(&text).map_err(|e| format!("{}: {e}", user.display()));
        }
        let names: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
        let (_, text) = BUILT_IN
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| format!("unknown theme {name:?}; built in: {}", names.join(", ")))?;
        Theme::parse(text)
    }

    /// The theme to use: `NO_COLOR` wins, then the flag or config.
    pub fn choose(requested: Option<&str>, config_dir: &std::path::Path) -> Result<Theme, String> {
        if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
            return Theme::load("mono", config_dir);
        }
        Theme::load(requested.unwrap_or("default"), config_dir)
    }

    pub fn mono() -> Theme {
        Theme::parse(BUILT_IN[3].1).unwrap_or_else(|_| Theme::fallback())
    }

    pub fn default_theme() -> Theme {
        Theme::parse(BUILT_IN[0].1).unwrap_or_else(|_| Theme::fallback())
    }

    fn fallback() -> Theme {
        let s = Style::default();
        Theme {
            name: "fallback".into(),
            text: s,
            muted: s,
            accent: s.add_modifier(Modifier::BOLD),
            selected: s.add_modifier(Modifier::REVERSED),
            ok: s,
            warning: s,
            error: s.add_modifier(Modifier::BOLD),
            user: s.add_modifier(Modifier::BOLD),
            assistant: s,
            tool: s,
            border: s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_themes_parse_and_mono_has_no_colour() {
        for (name, text) in BUILT_IN {
            let t = Theme::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(t.name, *name);
        }
        let mono = Theme::mono();
        assert_eq!(mono.error.fg, Some(Color::Reset));
        assert!(mono.selected.add_modifier.contains(Modifier::REVERSED));
        assert!(Theme::parse("name = \"x\"").is_err());
    }
}
