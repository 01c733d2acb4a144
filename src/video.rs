//! Video frames and the files they are written to: MP4 (H.264 through OpenH264, muxed with the
//! `mp4` crate), animated GIF, numbered PNG frames and Y4M, chosen by the output's extension.
//!
//! Every writer writes to temporary files beside the destination and renames them into place
//! only when everything has been written, so a failure never leaves a half-written file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use vidrt_ir::Tensor;

use crate::error::{Error, Result};

/// Frames per second of Wan2.1's output (`export_to_video(..., fps=16)` in its examples).
pub const WAN_FPS: u32 = 16;

/// A clip of RGB8 frames, row-major, `width * height * 3` bytes each.
#[derive(Clone, Debug, PartialEq)]
pub struct Video {
    pub width: usize,
    pub height: usize,
    pub fps: u32,
    pub frames: Vec<Vec<u8>>,
}

impl Video {
    /// Converts a decoded video `[1, 3, T, H, W]` with values in `[-1, 1]` to RGB8 frames the
    /// way diffusers' video processor does: `(x / 2 + 0.5).clamp(0, 1)`, then `round(255 v)`.
    pub fn from_tensor(video: &Tensor, fps: u32) -> Result<Video> {
        let d = video.dims();
        if d.len() != 5 || d[0] != 1 || d[1] != 3 {
            return Err(Error::Invalid(format!("a video tensor must be [1, 3, T, H, W], got {}", video.shape())));
        }
        let (t, h, w) = (d[2], d[3], d[4]);
        if let Some(i) = video.first_non_finite() {
            return Err(Error::Invalid(format!("the decoded video has a non-finite value at element {i}")));
        }
        let v = video.to_f32_vec();
        let plane = t * h * w;
        let frames = (0..t)
            .map(|f| {
                let mut rgb = vec![0u8; h * w * 3];
                for p in 0..h * w {
                    for c in 0..3 {
                        let x = v[c * plane + f * h * w + p];
                        rgb[p * 3 + c] = ((x / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round() as u8;
                    }
                }
                rgb
            })
            .collect();
        Ok(Video { width: w, height: h, fps, frames })
    }

    /// The frames as a float tensor `[1, T, H, W, 3]` in `[0, 1]` before quantisation, the
    /// layout of diffusers' `output_type="np"`.
    pub fn frames_tensor(video: &Tensor) -> Result<Tensor> {
        let d = video.dims();
        if d.len() != 5 || d[1] != 3 {
            return Err(Error::Invalid(format!("a video tensor must be [B, 3, T, H, W], got {}", video.shape())));
        }
        let (b, t, h, w) = (d[0], d[2], d[3], d[4]);
        let v = video.to_f32_vec();
        let mut out = vec![0f32; v.len()];
        for bi in 0..b {
            for c in 0..3 {
                for f in 0..t {
                    for p in 0..h * w {
                        let src = (((bi * 3 + c) * t + f) * h * w) + p;
                        let dst = (((bi * t + f) * h * w) + p) * 3 + c;
                        out[dst] = (v[src] / 2.0 + 0.5).clamp(0.0, 1.0);
                    }
                }
            }
        }
        Tensor::from_f32([b, t, h, w, 3], out).map_err(|e| Error::Other(e.to_string()))
    }

    fn check(&self) -> Result<()> {
        if self.frames.is_empty() || self.width == 0 || self.height == 0 {
            return Err(Error::Invalid("the video has no frames".into()));
        }
        if self.frames.iter().any(|f| f.len() != self.width * self.height * 3) {
            return Err(Error::Invalid("a frame's size does not match the video's width and height".into()));
        }
        if self.fps == 0 {
            return Err(Error::Invalid("fps must be positive".into()));
        }
        Ok(())
    }
}

/// An output file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// H.264 in an MP4 container.
    Mp4,
    /// Animated GIF (256-colour palette per frame).
    Gif,
    /// One PNG per frame: `name.png` becomes `name_0000.png`, `name_0001.png`, ...
    Png,
    /// YUV4MPEG2, 4:4:4, lossless.
    Y4m,
}

impl Format {
    /// The format an output path asks for, by its extension.
    pub fn from_path(path: &Path) -> Result<Format> {
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("mp4") => Ok(Format::Mp4),
            Some("gif") => Ok(Format::Gif),
            Some("png") => Ok(Format::Png),
            Some("y4m") => Ok(Format::Y4m),
            _ => Err(Error::Invalid(format!(
                "{}: unknown output format; use a .mp4, .gif, .png or .y4m file name",
                path.display()
            ))),
        }
    }
}

/// Writes `video` to `path` in the format its extension names. Returns the files written.
pub fn write(video: &Video, path: &Path) -> Result<Vec<PathBuf>> {
    video.check()?;
    match Format::from_path(path)? {
        Format::Mp4 => commit(path, |w| write_mp4(video, w)).map(|()| vec![path.to_path_buf()]),
        Format::Gif => commit(path, |w| write_gif(video, w)).map(|()| vec![path.to_path_buf()]),
        Format::Y4m => commit(path, |w| write_y4m(video, w)).map(|()| vec![path.to_path_buf()]),
        Format::Png => write_pngs(video, path),
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".partial-{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes through `f` into a temporary file and renames it to `path` on success only.
fn commit(path: &Path, f: impl FnOnce(&mut BufWriter<File>) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut w = BufWriter::new(file);
        f(&mut w)?;
        let file = w.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_y4m(video: &Video, w: &mut BufWriter<File>) -> Result<()> {
    let err = |e: y4m::Error| Error::Other(format!("y4m: {e:?}"));
    let mut enc = y4m::encode(video.width, video.height, y4m::Ratio::new(video.fps as usize, 1))
        .with_colorspace(y4m::Colorspace::C444)
        .write_header(w)
        .map_err(err)?;
    let n = video.width * video.height;
    let (mut y, mut u, mut v) = (vec![0u8; n], vec![0u8; n], vec![0u8; n]);
    for frame in &video.frames {
        for p in 0..n {
            let (yy, uu, vv) = rgb_to_ycbcr(frame[3 * p], frame[3 * p + 1], frame[3 * p + 2]);
            (y[p], u[p], v[p]) = (yy, uu, vv);
        }
        enc.write_frame(&y4m::Frame::new([&y, &u, &v], None)).map_err(err)?;
    }
    Ok(())
}

/// Full-range BT.601 RGB → YCbCr (the JFIF matrix), which Y4M readers assume by default.
fn rgb_to_ycbcr(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
    let y = 0.299 * r + 0.587 * g + 0.114 * b;
    let cb = 128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b;
    let cr = 128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b;
    let q = |x: f32| x.round().clamp(0.0, 255.0) as u8;
    (q(y), q(cb), q(cr))
}

fn write_gif(video: &Video, w: &mut BufWriter<File>) -> Result<()> {
    let err = |e: gif::EncodingError| Error::Other(format!("gif: {e}"));
    let (width, height) = (dim_u16(video.width)?, dim_u16(video.height)?);
    let mut enc = gif::Encoder::new(w, width, height, &[]).map_err(err)?;
    enc.set_repeat(gif::Repeat::Infinite).map_err(err)?;
    let delay = (100.0 / video.fps as f64).round().max(1.0) as u16;
    for frame in &video.frames {
        // Speed 10 of 1..=30: NeuQuant sampling; a good palette for small frames.
        let mut f = gif::Frame::from_rgb_speed(width, height, frame, 10);
        f.delay = delay;
        enc.write_frame(&f).map_err(err)?;
    }
    Ok(())
}

fn dim_u16(x: usize) -> Result<u16> {
    u16::try_from(x).map_err(|_| Error::Invalid(format!("a frame dimension of {x} is too large for this format")))
}

fn png_frame(video: &Video, frame: &[u8], w: &mut BufWriter<File>) -> Result<()> {
    let err = |e: png::EncodingError| Error::Other(format!("png: {e}"));
    let mut enc = png::Encoder::new(w, video.width as u32, video.height as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(err)?;
    writer.write_image_data(frame).map_err(err)?;
    writer.finish().map_err(err)
}

/// The file names of PNG frames for an output path `dir/name.png`.
pub fn png_frame_paths(path: &Path, frames: usize) -> Vec<PathBuf> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("frame");
    (0..frames).map(|i| path.with_file_name(format!("{stem}_{i:04}.png"))).collect()
}

fn write_pngs(video: &Video, path: &Path) -> Result<Vec<PathBuf>> {
    let finals = png_frame_paths(path, video.frames.len());
    let temps: Vec<PathBuf> = finals.iter().map(|p| temp_path(p)).collect();
    let result = (|| {
        for (frame, tmp) in video.frames.iter().zip(&temps) {
            let file = File::create(tmp).map_err(io_err(tmp))?;
            let mut w = BufWriter::new(file);
            png_frame(video, frame, &mut w)?;
            w.flush().map_err(io_err(tmp))?;
        }
        for (tmp, dst) in temps.iter().zip(&finals) {
            std::fs::rename(tmp, dst).map_err(io_err(dst))?;
        }
        Ok(finals.clone())
    })();
    if result.is_err() {
        for t in &temps {
            let _ = std::fs::remove_file(t);
        }
    }
    result
}

/// Splits an Annex B byte stream into NAL units (without start codes).
fn annexb_nals(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i] == 0 && stream[i + 1] == 0 && stream[i + 2] == 1 {
            starts.push((i, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (k, &(_, body)) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(stream.len(), |&(sc, _)| sc);
        // A four-byte start code leaves its leading zero at the end of the previous unit.
        while end > body && stream[end - 1] == 0 && k + 1 < starts.len() {
            end -= 1;
        }
        if end > body {
            nals.push(&stream[body..end]);
        }
    }
    nals
}

fn write_mp4(video: &Video, w: &mut BufWriter<File>) -> Result<()> {
    use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, QpRange, RateControlMode};
    use openh264::formats::{RgbSliceU8, YUVBuffer};
    use openh264::OpenH264API;

    if !video.width.is_multiple_of(2) || !video.height.is_multiple_of(2) {
        return Err(Error::Invalid(format!(
            "H.264 (4:2:0) needs an even width and height, got {}x{}; write .y4m, .png or .gif instead",
            video.width, video.height
        )));
    }
    let h264 = |e: openh264::Error| Error::Other(format!("H.264 encoder: {e}"));
    let mp4e = |e: mp4::Error| Error::Other(format!("MP4 writer: {e}"));
    // About 0.25 bits per pixel per frame, at least 1 Mbit/s: clean output at any size.
    let bps = ((video.width * video.height) as f64 * f64::from(video.fps) * 0.25).max(1.0e6) as u32;
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(bps))
        .max_frame_rate(FrameRate::from_hz(video.fps as f32))
        .rate_control_mode(RateControlMode::Off)
        .qp(QpRange::new(16, 26))
        .skip_frames(false);
    let mut enc = Encoder::with_api_config(OpenH264API::from_source(), config).map_err(h264)?;

    let mut sps: Option<Vec<u8>> = None;
    let mut pps: Option<Vec<u8>> = None;
    let mut samples: Vec<(Vec<u8>, bool)> = Vec::with_capacity(video.frames.len());
    for frame in &video.frames {
        let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(frame, (video.width, video.height)));
        let bits = enc.encode(&yuv).map_err(h264)?.to_vec();
        let mut sample = Vec::with_capacity(bits.len() + 16);
        let mut sync = false;
        for nal in annexb_nals(&bits) {
            match nal[0] & 0x1f {
                7 => sps = Some(nal.to_vec()),
                8 => pps = Some(nal.to_vec()),
                t => {
                    sync |= t == 5;
                    sample.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                    sample.extend_from_slice(nal);
                }
            }
        }
        if sample.is_empty() {
            return Err(Error::Other("H.264 encoder returned an empty frame".into()));
        }
        samples.push((sample, sync));
    }
    let (Some(sps), Some(pps)) = (sps, pps) else {
        return Err(Error::Other("H.264 encoder produced no SPS/PPS".into()));
    };

    let brand = |s: &str| s.parse::<mp4::FourCC>().map_err(mp4e);
    let config = mp4::Mp4Config {
        major_brand: brand("isom")?,
        minor_version: 512,
        compatible_brands: vec![brand("isom")?, brand("iso2")?, brand("avc1")?, brand("mp41")?],
        timescale: 1000,
    };
    let mut mw = mp4::Mp4Writer::write_start(w, &config).map_err(mp4e)?;
    let timescale = video.fps * 1000;
    mw.add_track(&mp4::TrackConfig {
        track_type: mp4::TrackType::Video,
        timescale,
        language: "und".into(),
        media_conf: mp4::MediaConfig::AvcConfig(mp4::AvcConfig {
            width: dim_u16(video.width)?,
            height: dim_u16(video.height)?,
            seq_param_set: sps,
            pic_param_set: pps,
        }),
    })
    .map_err(mp4e)?;
    for (i, (bytes, is_sync)) in samples.into_iter().enumerate() {
        let sample = mp4::Mp4Sample {
            start_time: i as u64 * 1000,
            duration: 1000,
            rendering_offset: 0,
            is_sync,
            bytes: bytes.into(),
        };
        mw.write_sample(1, &sample).map_err(mp4e)?;
    }
    mw.write_end().map_err(mp4e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A moving gradient with a bright square: enough structure for a lossy codec to keep.
    fn clip(width: usize, height: usize, frames: usize) -> Video {
        let frames = (0..frames)
            .map(|f| {
                let mut rgb = vec![0u8; width * height * 3];
                for y in 0..height {
                    for x in 0..width {
                        let p = (y * width + x) * 3;
                        rgb[p] = ((x * 255) / width) as u8;
                        rgb[p + 1] = ((y * 255) / height) as u8;
                        rgb[p + 2] = (f * 20 % 256) as u8;
                        if (x + 2 * f) % width < 12 && y > height / 4 && y < height / 2 {
                            rgb[p..p + 3].copy_from_slice(&[250, 250, 250]);
                        }
                    }
                }
                rgb
            })
            .collect();
        Video { width, height, fps: 16, frames }
    }

    fn psnr(a: &[u8], b: &[u8]) -> f64 {
        let mse = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum::<f64>() / a.len() as f64;
        10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10()
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vidrt-video-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn mp4_decodes_back_to_the_frames() {
        let v = clip(64, 48, 6);
        let dir = tmpdir("mp4");
        let path = dir.join("clip.mp4");
        write(&v, &path).expect("write mp4");
        let bytes = std::fs::read(&path).expect("read back");
        let size = bytes.len() as u64;
        let mut reader = mp4::Mp4Reader::read_header(std::io::Cursor::new(bytes), size).expect("mp4 header");
        let (&id, track) = reader.tracks().iter().next().expect("one track");
        assert_eq!((track.width(), track.height()), (64, 48));
        let sps = track.sequence_parameter_set().expect("sps").to_vec();
        let pps = track.picture_parameter_set().expect("pps").to_vec();
        let n = track.sample_count();
        assert_eq!(n, 6);
        let mut dec = openh264::decoder::Decoder::new().expect("decoder");
        let mut decoded = Vec::new();
        for i in 1..=n {
            let s = reader.read_sample(id, i).expect("sample").expect("present");
            let mut annexb = Vec::new();
            if i == 1 {
                for ps in [&sps, &pps] {
                    annexb.extend_from_slice(&[0, 0, 0, 1]);
                    annexb.extend_from_slice(ps);
                }
            }
            let mut b = &s.bytes[..];
            while b.len() >= 4 {
                let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
                annexb.extend_from_slice(&[0, 0, 0, 1]);
                annexb.extend_from_slice(&b[4..4 + len]);
                b = &b[4 + len..];
            }
            if let Some(img) = dec.decode(&annexb).expect("decode") {
                let mut rgb = vec![0u8; 64 * 48 * 3];
                use openh264::formats::YUVSource;
                assert_eq!(img.dimensions(), (64, 48));
                img.write_rgb8(&mut rgb);
                decoded.push(rgb);
            }
        }
        assert_eq!(decoded.len(), 6, "every frame decodes");
        for (a, b) in v.frames.iter().zip(&decoded) {
            let p = psnr(a, b);
            assert!(p > 28.0, "PSNR {p:.1} dB");
        }
        assert!(!dir.join(format!("clip.mp4.partial-{}", std::process::id())).exists());
    }

    #[test]
    fn gif_png_y4m_round_trip() {
        let v = clip(40, 24, 3);
        let dir = tmpdir("gif");
        write(&v, &dir.join("a.gif")).expect("gif");
        let mut opts = gif::DecodeOptions::new();
        opts.set_color_output(gif::ColorOutput::RGBA);
        let mut d = opts.read_info(File::open(dir.join("a.gif")).expect("open")).expect("gif header");
        let mut n = 0;
        while let Some(f) = d.read_next_frame().expect("frame") {
            let rgb: Vec<u8> = f.buffer.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
            let p = psnr(&v.frames[n], &rgb);
            assert!(p > 20.0, "GIF frame {n}: PSNR {p:.1} dB");
            n += 1;
        }
        assert_eq!(n, 3);

        let files = write(&v, &dir.join("f.png")).expect("png");
        assert_eq!(files.len(), 3);
        for (i, f) in files.iter().enumerate() {
            let dec = png::Decoder::new(std::io::BufReader::new(File::open(f).expect("open")));
            let mut r = dec.read_info().expect("png header");
            let mut buf = vec![0; r.output_buffer_size().expect("size")];
            r.next_frame(&mut buf).expect("png frame");
            assert_eq!(buf, v.frames[i], "PNG is lossless");
        }

        write(&v, &dir.join("a.y4m")).expect("y4m");
        let mut dec = y4m::decode(File::open(dir.join("a.y4m")).expect("open")).expect("y4m header");
        assert_eq!((dec.get_width(), dec.get_height()), (40, 24));
        let f = dec.read_frame().expect("y4m frame");
        assert_eq!(f.get_y_plane().len(), 40 * 24);
    }

    #[test]
    fn bad_requests_are_errors_and_leave_nothing() {
        let v = clip(41, 24, 2);
        let dir = tmpdir("bad");
        assert!(matches!(write(&v, &dir.join("a.mp4")), Err(Error::Invalid(_))));
        assert!(matches!(write(&v, &dir.join("a.avi")), Err(Error::Invalid(_))));
        assert!(write(&v, &dir.join("missing-dir").join("a.gif")).is_err());
        assert_eq!(std::fs::read_dir(&dir).expect("list").count(), 0, "no partial files left");
        let empty = Video { width: 8, height: 8, fps: 16, frames: vec![] };
        assert!(write(&empty, &dir.join("e.gif")).is_err());
    }

    #[test]
    fn annexb_split() {
        let s = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5];
        let n = annexb_nals(&s);
        assert_eq!(n, vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5][..]]);
    }

    #[test]
    fn tensor_conversion() {
        let t = Tensor::from_f32([1, 3, 1, 1, 2], vec![-1.0, 1.0, 0.0, 0.5, 2.0, -3.0]).expect("tensor");
        let v = Video::from_tensor(&t, 16).expect("video");
        assert_eq!(v.frames[0], vec![0, 128, 255, 255, 191, 0]);
        let bad = Tensor::from_f32([1, 3, 1, 1, 1], vec![f32::NAN, 0.0, 0.0]).expect("tensor");
        assert!(Video::from_tensor(&bad, 16).is_err());
    }
}
