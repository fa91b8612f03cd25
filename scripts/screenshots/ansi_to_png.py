#!/usr/bin/env python3
"""Render a terminal capture (`tmux capture-pane -e -p`) as a PNG.

    ansi_to_png.py CAPTURE.ansi OUT.png --cols 120 --rows 34 [--font-size 16]

The capture is text with SGR escapes (as tmux writes them: 16 colours, 256 colours, truecolor,
bold, dim, italic, underline, reverse, strike; attributes carry over from one line to the next).
Each cell is drawn on a fixed grid: its background, then its glyph in DejaVu Sans Mono (bold and
oblique faces when present). Box-drawing and block characters are drawn as lines and rectangles so
borders join without seams whatever the font's metrics. Needs Pillow and the DejaVu fonts
(Debian: fonts-dejavu-core; fonts-dejavu-extra adds the oblique faces).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import unicodedata

from PIL import Image, ImageDraw, ImageFont

# The terminal's look: a dark theme (One Dark-like) for the 16 ANSI colours.
DEFAULT_FG = (215, 218, 224)
DEFAULT_BG = (30, 33, 39)
PALETTE16 = [
    (24, 26, 31),  # 0 black
    (224, 108, 117),  # 1 red
    (152, 195, 121),  # 2 green
    (229, 192, 123),  # 3 yellow
    (97, 175, 239),  # 4 blue
    (198, 120, 221),  # 5 magenta
    (86, 182, 194),  # 6 cyan
    (171, 178, 191),  # 7 white (ratatui "gray")
    (99, 108, 125),  # 8 bright black (ratatui "darkgray")
    (255, 122, 133),  # 9 bright red
    (181, 232, 144),  # 10 bright green
    (240, 208, 143),  # 11 bright yellow
    (124, 196, 255),  # 12 bright blue
    (215, 154, 232),  # 13 bright magenta
    (127, 211, 222),  # 14 bright cyan
    (250, 250, 250),  # 15 bright white
]

FONT_DIRS = [
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu",
    "/usr/share/fonts/TTF",
]


def palette256(n: int) -> tuple[int, int, int]:
    if n < 16:
        return PALETTE16[n]
    if n < 232:
        n -= 16
        levels = (0, 95, 135, 175, 215, 255)
        return (levels[n // 36], levels[(n // 6) % 6], levels[n % 6])
    v = 8 + 10 * (n - 232)
    return (v, v, v)


class Style:
    __slots__ = ("fg", "bg", "bold", "dim", "italic", "underline", "reverse", "strike", "hidden")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.fg = None  # None: the default colour
        self.bg = None
        self.bold = self.dim = self.italic = self.underline = False
        self.reverse = self.strike = self.hidden = False

    def copy(self) -> "Style":
        s = Style()
        for k in Style.__slots__:
            setattr(s, k, getattr(self, k))
        return s


def _ext_colour(params: list[list[str]], i: int) -> tuple[tuple[int, int, int] | None, int]:
    """Reads `38;5;N`, `38;2;R;G;B` or the colon forms (`38:5:N`, `38:2::R:G:B`) at params[i]."""
    head = params[i]
    if len(head) > 1:  # colon sub-parameters, all in this one
        sub = [x for x in head[1:]]
        if sub and sub[0] == "5" and len(sub) >= 2:
            return palette256(int(sub[1] or 0) & 255), i + 1
        if sub and sub[0] == "2":
            rgb = [int(x or 0) for x in sub[1:] if x != ""][-3:]
            if len(rgb) == 3:
                return tuple(min(255, v) for v in rgb), i + 1  # type: ignore[return-value]
        return None, i + 1
    kind = params[i + 1][0] if i + 1 < len(params) else ""
    if kind == "5" and i + 2 < len(params):
        return palette256(int(params[i + 2][0] or 0) & 255), i + 3
    if kind == "2" and i + 4 < len(params):
        rgb = tuple(min(255, int(params[i + k][0] or 0)) for k in (2, 3, 4))
        return rgb, i + 5  # type: ignore[return-value]
    return None, len(params)


def apply_sgr(style: Style, raw: str) -> None:
    params = [p.split(":") for p in (raw.split(";") if raw else ["0"])]
    i = 0
    while i < len(params):
        code = int(params[i][0] or 0)
        if code == 0:
            style.reset()
        elif code == 1:
            style.bold = True
        elif code == 2:
            style.dim = True
        elif code == 3:
            style.italic = True
        elif code == 4:
            style.underline = not (len(params[i]) > 1 and params[i][1] == "0")
        elif code == 21:
            style.underline = True
        elif code == 7:
            style.reverse = True
        elif code == 8:
            style.hidden = True
        elif code == 9:
            style.strike = True
        elif code == 22:
            style.bold = style.dim = False
        elif code == 23:
            style.italic = False
        elif code == 24:
            style.underline = False
        elif code == 27:
            style.reverse = False
        elif code == 28:
            style.hidden = False
        elif code == 29:
            style.strike = False
        elif 30 <= code <= 37:
            style.fg = PALETTE16[code - 30]
        elif 90 <= code <= 97:
            style.fg = PALETTE16[code - 90 + 8]
        elif 40 <= code <= 47:
            style.bg = PALETTE16[code - 40]
        elif 100 <= code <= 107:
            style.bg = PALETTE16[code - 100 + 8]
        elif code == 39:
            style.fg = None
        elif code == 49:
            style.bg = None
        elif code in (38, 48, 58):
            colour, nxt = _ext_colour(params, i)
            if code == 38:
                style.fg = colour
            elif code == 48:
                style.bg = colour
            i = nxt
            continue
        i += 1


ESCAPE = re.compile(
    r"\x1b\[([0-9;:?]*)([A-Za-z@])"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC (hyperlinks, titles)
    r"|\x1b[()][0-9A-Za-z]"  # charset selection
    r"|\x1b[=>78]"
)


def char_width(ch: str) -> int:
    if unicodedata.combining(ch) or ch in "\u200b\u200c\u200d\ufe0f":
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def parse(text: str, cols: int, rows: int):
    """A rows x cols grid of (char, Style); a wide char's second cell holds ''."""
    blank = Style()
    grid = [[(" ", blank) for _ in range(cols)] for _ in range(rows)]
    style = Style()
    row = col = 0
    pos = 0
    for m in list(ESCAPE.finditer(text)) + [None]:
        end = m.start() if m else len(text)
        for ch in text[pos:end]:
            if ch == "\n":
                row += 1
                col = 0
                continue
            if ch == "\r" or ord(ch) < 32 or ch == "\x7f":
                continue
            w = char_width(ch)
            if w == 0:
                if col > 0 and row < rows:
                    prev, st = grid[row][col - 1]
                    grid[row][col - 1] = (prev + ch, st)
                continue
            if row < rows and col + w <= cols:
                grid[row][col] = (ch, style.copy())
                if w == 2:
                    grid[row][col + 1] = ("", style.copy())
            col += w
        if m is None:
            break
        if m.group(2) == "m":
            apply_sgr(style, m.group(1))
        pos = m.end()
    return grid


# Box drawing: for each character, the weight of its arm (left, right, up, down):
# 0 none, 1 light, 2 heavy, 3 double.
def _box_table() -> dict[str, tuple[int, int, int, int]]:
    t: dict[str, tuple[int, int, int, int]] = {}

    def add(chars: str, arms: tuple[int, int, int, int]) -> None:
        for c in chars:
            t[c] = arms

    L, H, D = 1, 2, 3
    for w, s in ((L, "─│┌┐└┘├┤┬┴┼"), (H, "━┃┏┓┗┛┣┫┳┻╋"), (D, "═║╔╗╚╝╠╣╦╩╬")):
        h, v, tl, tr, bl, br, lt, rt, tt, bt, x = s
        add(h, (w, w, 0, 0))
        add(v, (0, 0, w, w))
        add(tl, (0, w, 0, w))
        add(tr, (w, 0, 0, w))
        add(bl, (0, w, w, 0))
        add(br, (w, 0, w, 0))
        add(lt, (0, w, w, w))
        add(rt, (w, 0, w, w))
        add(tt, (w, w, 0, w))
        add(bt, (w, w, w, 0))
        add(x, (w, w, w, w))
    add("╭", (0, L, 0, L))
    add("╮", (L, 0, 0, L))
    add("╰", (0, L, L, 0))
    add("╯", (L, 0, L, 0))
    add("╴", (L, 0, 0, 0))
    add("╶", (0, L, 0, 0))
    add("╵", (0, 0, L, 0))
    add("╷", (0, 0, 0, L))
    return t


BOX = _box_table()
BLOCKS = {
    "█": (0, 0, 8, 8),
    "▀": (0, 0, 8, 4),
    "▄": (0, 4, 8, 8),
    "▌": (0, 0, 4, 8),
    "▐": (4, 0, 8, 8),
    "▁": (0, 7, 8, 8),
    "▂": (0, 6, 8, 8),
    "▃": (0, 5, 8, 8),
    "▅": (0, 3, 8, 8),
    "▆": (0, 2, 8, 8),
    "▇": (0, 1, 8, 8),
    "▏": (0, 0, 1, 8),
    "▎": (0, 0, 2, 8),
    "▍": (0, 0, 3, 8),
    "▋": (0, 0, 5, 8),
    "▊": (0, 0, 6, 8),
    "▉": (0, 0, 7, 8),
    "▔": (0, 0, 8, 1),
    "▕": (7, 0, 8, 8),
}
SHADES = {"░": 0.25, "▒": 0.5, "▓": 0.75}


def find_font(name: str) -> str | None:
    for d in FONT_DIRS:
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    return None


class Renderer:
    def __init__(self, size: int) -> None:
        regular = find_font("DejaVuSansMono.ttf")
        if not regular:
            sys.exit("ansi_to_png: DejaVu Sans Mono not found (apt-get install fonts-dejavu-core)")
        bold = find_font("DejaVuSansMono-Bold.ttf") or regular
        italic = find_font("DejaVuSansMono-Oblique.ttf") or regular
        bold_italic = find_font("DejaVuSansMono-BoldOblique.ttf") or bold
        self.fonts = {
            (False, False): ImageFont.truetype(regular, size),
            (True, False): ImageFont.truetype(bold, size),
            (False, True): ImageFont.truetype(italic, size),
            (True, True): ImageFont.truetype(bold_italic, size),
        }
        fallback = find_font("DejaVuSans.ttf")
        self.fallback = ImageFont.truetype(fallback, size) if fallback else None
        f = self.fonts[(False, False)]
        ascent, descent = f.getmetrics()
        self.cw = round(f.getlength("M"))
        self.ch = ascent + descent + max(1, size // 8)
        self.baseline = (self.ch - ascent - descent) // 2 + ascent
        self.thin = max(1, round(size / 14))
        self.notdef = self._mask("\ue000")
        self.missing: dict[str, bool] = {}

    def _mask(self, ch: str) -> bytes:
        img = Image.new("L", (self.cw * 3, self.ch))
        ImageDraw.Draw(img).text((0, self.baseline), ch, font=self.fonts[(False, False)], fill=255, anchor="ls")
        return img.tobytes()

    def has_glyph(self, ch: str) -> bool:
        """Whether DejaVu Sans Mono draws `ch` (else it draws the same box as for U+E000)."""
        if ch not in self.missing:
            self.missing[ch] = self._mask(ch) == self.notdef
        return not self.missing[ch]

    def box(self, d: ImageDraw.ImageDraw, x: int, y: int, arms, fg) -> None:
        cx = x + self.cw // 2
        cy = y + self.ch // 2
        left, right, up, down = arms

        def thick(w: int) -> int:
            return self.thin * 2 if w == 2 else self.thin

        def hline(x0: int, x1: int, w: int) -> None:
            if w == 3:
                g = self.thin
                for off in (-g - self.thin // 2 - 1, g - self.thin // 2 + 1):
                    d.rectangle([x0, cy + off, x1, cy + off + self.thin - 1], fill=fg)
            else:
                t = thick(w)
                d.rectangle([x0, cy - t // 2, x1, cy - t // 2 + t - 1], fill=fg)

        def vline(y0: int, y1: int, w: int) -> None:
            if w == 3:
                g = self.thin
                for off in (-g - self.thin // 2 - 1, g - self.thin // 2 + 1):
                    d.rectangle([cx + off, y0, cx + off + self.thin - 1, y1], fill=fg)
            else:
                t = thick(w)
                d.rectangle([cx - t // 2, y0, cx - t // 2 + t - 1, y1], fill=fg)

        # Each arm runs from the cell's edge to the far side of the crossing stroke, so corners
        # close without overhang.
        tv = max(thick(up) if up else 0, thick(down) if down else 0)
        th = max(thick(left) if left else 0, thick(right) if right else 0)
        if left:
            hline(x, cx - tv // 2 + tv - 1 if tv else cx, left)
        if right:
            hline(cx - tv // 2 if tv else cx, x + self.cw - 1, right)
        if up:
            vline(y, cy - th // 2 + th - 1 if th else cy, up)
        if down:
            vline(cy - th // 2 if th else cy, y + self.ch - 1, down)

    def render(self, grid, pad: int) -> Image.Image:
        rows, cols = len(grid), len(grid[0])
        img = Image.new("RGB", (cols * self.cw + 2 * pad, rows * self.ch + 2 * pad), DEFAULT_BG)
        d = ImageDraw.Draw(img)
        for r, line in enumerate(grid):
            for c, (text, st) in enumerate(line):
                if text == "":
                    continue  # the second half of a wide char
                fg = st.fg or DEFAULT_FG
                bg = st.bg or DEFAULT_BG
                if st.reverse:
                    fg, bg = bg, fg
                if st.dim:
                    fg = tuple((a + b) // 2 for a, b in zip(fg, bg))
                if st.hidden:
                    fg = bg
                width = 2 if char_width(text[0]) == 2 else 1
                x = pad + c * self.cw
                y = pad + r * self.ch
                if bg != DEFAULT_BG:
                    d.rectangle([x, y, x + width * self.cw - 1, y + self.ch - 1], fill=bg)
                ch = text[0]
                if ch in BOX and len(text) == 1:
                    self.box(d, x, y, BOX[ch], fg)
                elif ch in BLOCKS:
                    x0, y0, x1, y1 = BLOCKS[ch]
                    d.rectangle(
                        [
                            x + x0 * self.cw // 8,
                            y + y0 * self.ch // 8,
                            x + x1 * self.cw // 8 - 1,
                            y + y1 * self.ch // 8 - 1,
                        ],
                        fill=fg,
                    )
                elif ch in SHADES:
                    a = SHADES[ch]
                    shade = tuple(round(f * a + b * (1 - a)) for f, b in zip(fg, bg))
                    d.rectangle([x, y, x + self.cw - 1, y + self.ch - 1], fill=shade)
                elif text != " ":
                    font = self.fonts[(st.bold, st.italic)]
                    if not self.has_glyph(ch) and self.fallback is not None:
                        font = self.fallback
                    gw = font.getlength(text)
                    gx = x + (width * self.cw - gw) / 2 if gw > width * self.cw else x
                    if font is self.fallback:
                        gx = x + (width * self.cw - gw) / 2
                    d.text((gx, y + self.baseline), text, font=font, fill=fg, anchor="ls")
                if st.underline:
                    uy = y + self.baseline + max(1, self.thin)
                    d.rectangle([x, uy, x + width * self.cw - 1, uy + self.thin - 1], fill=fg)
                if st.strike:
                    sy = y + self.ch // 2
                    d.rectangle([x, sy, x + width * self.cw - 1, sy + self.thin - 1], fill=fg)
        return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture")
    ap.add_argument("out")
    ap.add_argument("--cols", type=int, required=True)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--font-size", type=int, default=16)
    ap.add_argument("--pad", type=int, default=14)
    a = ap.parse_args()
    with open(a.capture, encoding="utf-8", errors="replace") as f:
        text = f.read()
    grid = parse(text, a.cols, a.rows)
    img = Renderer(a.font_size).render(grid, a.pad)
    img.save(a.out, optimize=True)


if __name__ == "__main__":
    main()
