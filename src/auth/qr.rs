//! QR codes for authenticator enrollment, as SVG text and as PNG bytes.

use crate::error::{Error, Result};
use qrcodegen::{QrCode, QrCodeEcc};

/// Quiet zone around the code, in modules (the QR specification asks for 4).
const BORDER: i32 = 4;

fn encode(text: &str) -> Result<QrCode> {
    QrCode::encode_text(text, QrCodeEcc::Medium).map_err(|_| Error::invalid("the text is too long for a QR code"))
}

/// An SVG image of the QR code for `text` (one unit per module).
pub fn svg(text: &str) -> Result<String> {
    let qr = encode(text)?;
    let size = qr.size() + 2 * BORDER;
    let mut path = String::new();
    for y in 0..qr.size() {
        for x in 0..qr.size() {
            if qr.get_module(x, y) {
                path.push_str(&format!("M{},{}h1v1h-1z", x + BORDER, y + BORDER));
            }
        }
    }
    Ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" viewBox=\"0 0 {size} {size}\" stroke=\"none\">\n<rect width=\"100%\" height=\"100%\" fill=\"#FFFFFF\"/>\n<path d=\"{path}\" fill=\"#000000\"/>\n</svg>\n"
    ))
}

/// A grayscale PNG of the QR code for `text`, `scale` pixels per module.
pub fn png(text: &str, scale: u32) -> Result<Vec<u8>> {
    let qr = encode(text)?;
    let scale = scale.clamp(1, 32);
    let modules = (qr.size() + 2 * BORDER) as u32;
    let px = modules * scale;
    let mut pixels = vec![255u8; (px * px) as usize];
    for y in 0..px {
        for x in 0..px {
            let mx = (x / scale) as i32 - BORDER;
            let my = (y / scale) as i32 - BORDER;
            if qr.get_module(mx, my) {
                pixels[(y * px + x) as usize] = 0;
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, px, px);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| Error::Internal(format!("png: {e}")))?;
        w.write_image_data(&pixels).map_err(|e| Error::Internal(format!("png: {e}")))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_and_svg_are_well_formed() {
        let p = png("otpauth://totp/RootStream:ada?secret=JBSWY3DPEHPK3PXP&issuer=RootStream", 4).unwrap();
        assert_eq!(&p[..8], b"\x89PNG\r\n\x1a\n");
        let s = svg("hello").unwrap();
        assert!(s.starts_with("<?xml") && s.contains("<path d=\"M") && s.trim_end().ends_with("</svg>"));
    }
}
