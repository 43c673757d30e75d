// otter serve's web page end to end in headless Chromium (Debian's chromium driven by
// playwright-core, both installed by tools/install-deps --test): load the page, generate with the
// bundled model (Ctrl+Enter), see the progress and the final image, cancel a long job, reuse
// parameters from the gallery, and render on a phone-sized screen. Screenshots go to ARTIFACTS.
//
// usage: node web_page_test.cjs OTTER_BINARY ARTIFACTS_DIR      (exit 77: skipped, saying why)
"use strict";
const {spawn, execSync} = require("child_process");
const fs = require("fs");
const path = require("path");

function loadPlaywright() {
  const roots = [process.env.NODE_PATH, (() => { try { return execSync("npm root -g").toString().trim(); } catch { return ""; } })()];
  for (const root of roots.filter(Boolean))
    try { return require(path.join(root, "playwright-core")); } catch {}
  try { return require("playwright-core"); } catch {}
  return null;
}

async function main() {
  const [otter, artifacts] = process.argv.slice(2);
  const chromium = "/usr/bin/chromium";
  const pw = loadPlaywright();
  if (!pw || !fs.existsSync(chromium)) {
    console.log("web page test skipped: needs playwright-core (npm) and /usr/bin/chromium: tools/install-deps --test");
    process.exit(77);
  }
  fs.mkdirSync(artifacts, {recursive: true});
  const server = spawn(otter, ["serve", "--port", "0", "-q"], {stdio: ["ignore", "pipe", "inherit"]});
  const url = await new Promise((resolve, reject) => {
    server.stdout.once("data", d => resolve(d.toString().trim()));
    server.once("exit", c => reject(new Error("otter serve exited " + c)));
  });
  const browser = await pw.chromium.launch({executablePath: chromium, args: ["--no-sandbox", "--disable-gpu"]});
  try {
    const page = await browser.newPage({viewport: {width: 1100, height: 800}});
    // Generous defaults: on 2 busy cores (ctest -j2 next to model tests) Chromium alone can take
    // tens of seconds to start rendering; a slow machine is not a broken page.
    page.setDefaultTimeout(90000);
    page.setDefaultNavigationTimeout(90000);
    await page.goto(url);
    await page.waitForFunction(() => document.querySelectorAll("#sampler option").length > 5);
    await page.fill("#prompt", "a red circle on a blue background");
    await page.fill("#seed", "1");
    await page.fill("#steps", "20");
    await page.focus("#prompt");
    await page.keyboard.press("Control+Enter");
    await page.waitForFunction(() => document.querySelector("#status").textContent.startsWith("step"), null, {timeout: 60000});
    await page.waitForFunction(() => document.querySelector("#status").textContent.startsWith("done"), null, {timeout: 60000});
    const src = await page.getAttribute("#current", "src");
    if (!src || !src.startsWith("data:image/png;base64,")) throw new Error("no final image: " + src);
    const params = await page.textContent("#params");
    if (!params.includes("Seed: 1") || !params.includes("Steps: 20")) throw new Error("parameters: " + params);
    if ((await page.$$("#gallery figure")).length !== 1) throw new Error("the gallery does not hold the image");
    await page.screenshot({path: path.join(artifacts, "web_page.png")});

    // A long job, cancelled from the page.
    await page.fill("#steps", "150");
    await page.fill("#width", "256");
    await page.fill("#height", "256");
    await page.click("#generate");
    await page.waitForFunction(() => document.querySelector("#status").textContent.startsWith("step"), null, {timeout: 60000});
    await page.click("#cancel");
    await page.waitForFunction(() => document.querySelector("#status").textContent === "cancelled", null, {timeout: 20000}).catch(async e => { console.error("status:", await page.textContent("#status")); throw e; });

    // Reuse the first image's parameters from the gallery.
    await page.fill("#prompt", "something else");
    await page.click("#gallery figure");
    if ((await page.inputValue("#prompt")) !== "a red circle on a blue background" || (await page.inputValue("#steps")) !== "20" ||
        (await page.inputValue("#width")) !== "0" || (await page.inputValue("#sampler")) !== "")
      throw new Error("the gallery did not restore the parameters");

    // The lab view: every experiment from the same noise, and the four pictures at a chosen step.
    await page.fill("#steps", "10");
    await page.click("#lab");
    await page.waitForFunction(() => document.querySelectorAll("#labgrid figure").length === 7, null, {timeout: 60000});
    await page.$eval("#labstep", el => { el.value = "4"; el.dispatchEvent(new Event("input")); });
    if ((await page.$$("#labpanel img")).length !== 4) throw new Error("the lab panel does not show cond, uncond, delta and guided");
    if (!(await page.textContent("#labcaption")).includes("Step 4")) throw new Error("the lab caption is not at step 4");
    await page.click("#labgrid figure:nth-child(2)");
    if (!(await page.textContent("#labcaption")).startsWith("uncond")) throw new Error("selecting an experiment did not show it");
    await page.screenshot({path: path.join(artifacts, "web_page_lab.png"), fullPage: true});

    // A phone-sized screen: one column, nothing wider than the screen.
    await page.setViewportSize({width: 390, height: 844});
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 0) throw new Error("the page is " + overflow + " px wider than a phone screen");
    await page.screenshot({path: path.join(artifacts, "web_page_phone.png"), fullPage: true});
    console.log("web page: generated, progressed, cancelled, reused; screenshots in " + artifacts);
  } finally {
    await browser.close();
    server.kill("SIGTERM");
  }
}

main().catch(e => { console.error(e); process.exit(1); });
