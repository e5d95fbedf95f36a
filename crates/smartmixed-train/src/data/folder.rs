//! Image folders as torchvision's `ImageFolder` lays them out: `DIR/train/<class>/*.png`
//! (or `.pgm`) and `DIR/test/<class>/*`, class names from the folder names in sorted
//! order, every image one size (converted to 8-bit grey). Hidden entries (names starting
//! with `.`) are skipped.

use std::path::{Path, PathBuf};

use super::image::read_image_as;
use super::Dataset;
use crate::{Error, Result};

/// The largest image read from a folder (pixels).
const MAX_IMAGE_PIXELS: usize = 1 << 22;

/// The class names of `dir/train` (its subfolders, sorted).
pub fn class_names(dir: &Path) -> Result<Vec<String>> {
    let train = dir.join("train");
    let names = classes_in(&train)?;
    if !(2..=256).contains(&names.len()) {
        return Err(Error::Mismatch {
            path: train,
            message: format!("{} class folders, expected 2 to 256", names.len()),
        });
    }
    Ok(names)
}

/// The names of `split`'s subfolders (its classes), sorted.
pub fn classes_in(split: &Path) -> Result<Vec<String>> {
    let mut names = entries(split)?
        .into_iter()
        .filter(|p| p.is_dir())
        .map(|p| folder_name(&p))
        .collect::<Result<Vec<String>>>()?;
    names.sort();
    Ok(names)
}

/// `dir/test` alone, for `eval`: its class folders (1 to 256, sorted) and their images
/// of `channels` bytes per pixel; labels index the returned names.
pub fn read_test(dir: &Path, channels: usize) -> Result<(Dataset, Vec<String>)> {
    let test = dir.join("test");
    let names = classes_in(&test)?;
    if !(1..=256).contains(&names.len()) {
        return Err(Error::Mismatch {
            path: test,
            message: format!("{} class folders, expected 1 to 256", names.len()),
        });
    }
    let (set, _) = read_split(&test, &names, None, channels)?;
    Ok((set, names))
}

/// The .png and .pgm files directly inside `dir`, sorted by name (`predict` takes a
/// directory as these).
pub fn images_in(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(entries(dir)?
        .into_iter()
        .filter(|p| p.is_file() && is_image(p))
        .collect())
}

/// Every class folder under `dir/test` is one of `classes` (from `dir/train`).
pub fn check_test_classes(dir: &Path, classes: &[String]) -> Result<()> {
    let test = dir.join("test");
    for p in entries(&test)?.into_iter().filter(|p| p.is_dir()) {
        let name = folder_name(&p)?;
        if !classes.contains(&name) {
            return Err(Error::Mismatch {
                path: p,
                message: format!(
                    "class `{name}` is not among train's: {}",
                    classes.join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// The images of `dir/<class>/` for every class in `classes`, as one dataset of
/// `channels` bytes per pixel; every image must have `size` (width, height) if given, else
/// the first image's.
pub fn read_split(
    dir: &Path,
    classes: &[String],
    size: Option<(usize, usize)>,
    channels: usize,
) -> Result<(Dataset, (usize, usize))> {
    let mut size = size;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for (label, class) in classes.iter().enumerate() {
        let folder = dir.join(class);
        if !folder.is_dir() {
            return Err(Error::Mismatch {
                path: folder,
                message: format!(
                    "no folder for class `{class}` (every class of train/ needs its folder, with images, here)"
                ),
            });
        }
        check_nothing_unread(&folder)?;
        let files = images_in(&folder)?;
        if files.is_empty() {
            return Err(Error::Mismatch {
                path: folder,
                message: "no .png or .pgm image in this class folder".into(),
            });
        }
        for file in files {
            let img = read_image_as(&file, MAX_IMAGE_PIXELS, channels)?;
            let (w, h) = *size.get_or_insert((img.width, img.height));
            if (img.width, img.height) != (w, h) {
                return Err(Error::Mismatch {
                    path: file,
                    message: format!(
                        "image of {} x {} pixels, the others are {w} x {h}",
                        img.width, img.height
                    ),
                });
            }
            pixels.extend_from_slice(&img.pixels);
            labels.push(label as u8);
        }
    }
    let (w, h) = size.unwrap_or((0, 0));
    let shape = if channels == 3 {
        vec![h, w, 3]
    } else {
        vec![h, w]
    };
    let set = Dataset::new(w * h * channels, pixels, labels).with_shape(shape);
    Ok((set, (w, h)))
}

/// A class folder's name, which becomes a class name in the model: it must be UTF-8
/// (a lossy conversion would make two different folders one class).
fn folder_name(path: &Path) -> Result<String> {
    let name = path.file_name().unwrap_or_default();
    name.to_str().map(str::to_owned).ok_or_else(|| Error::Mismatch {
        path: path.to_path_buf(),
        message: format!(
            "class folder name {} is not UTF-8, expected a UTF-8 name (it becomes the class's name)",
            name.to_string_lossy().escape_debug()
        ),
    })
}

/// Image formats this reader does not decode: a class folder holding one would train on
/// fewer images than the user sees there, without a word.
const UNREAD_IMAGES: [&str; 8] = ["jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp", "ppm"];

/// A class folder holds no image this reader would skip (another format) and no folder
/// (its images would not be read: a class is one level, `split/<class>/*`).
fn check_nothing_unread(folder: &Path) -> Result<()> {
    for p in entries(folder)? {
        let ext = p
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let message = if p.is_dir() {
            "a folder inside a class folder, whose images would not be read (a class is one folder of images); move them up or out".to_string()
        } else if let Some(e) = ext.filter(|e| UNREAD_IMAGES.contains(&e.as_str())) {
            format!("a .{e} image, which this reader does not decode (PNG and PGM only), so it would be left out of training in silence; convert it or move it out")
        } else {
            continue;
        };
        return Err(Error::Mismatch { path: p, message });
    }
    Ok(())
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png") || e.eq_ignore_ascii_case("pgm"))
}

/// The entries of `dir` but hidden ones (names starting with `.`: a notebook's
/// `.ipynb_checkpoints` folder would become a class, macOS's `._x.png` files are no
/// images), sorted by name (so that loading is reproducible).
fn entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let read = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "cannot list folder", e))?;
    let mut paths = read
        .map(|e| e.map(|e| e.path()))
        .filter(|p| {
            p.as_ref().map_or(true, |p| {
                !p.file_name()
                    .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
            })
        })
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::io(dir, "cannot list folder", e))?;
    paths.sort();
    Ok(paths)
}
