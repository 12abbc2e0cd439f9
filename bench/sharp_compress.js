// The PicList baseline for `make bench`: sharp at quality 80 (mozjpeg JPEG, palette PNG),
// the settings PicList users get. Usage: node sharp_compress.js OUT_DIR FILE... ; prints seconds.
const sharp = require("sharp");
const path = require("path");

async function main() {
  const [out, ...files] = process.argv.slice(2);
  sharp.concurrency(0);
  const start = process.hrtime.bigint();
  await Promise.all(files.map(async (file) => {
    const target = path.join(out, path.basename(file));
    const image = sharp(file).rotate();  // apply EXIF orientation, as PicList does
    const ext = path.extname(file).toLowerCase();
    if (ext === ".png") await image.png({ palette: true, quality: 80 }).toFile(target);
    else await image.jpeg({ mozjpeg: true, quality: 80 }).toFile(target);
  }));
  console.log(Number(process.hrtime.bigint() - start) / 1e9);
}
main().catch((e) => { console.error(e); process.exit(1); });
