// Package bundle owns prefetch's bundle file: one archive holding a whole
// set of images, for a node that no registry can serve (an air-gapped site,
// or a cluster whose registry path is down and whose upstream is out of
// reach). It writes bundles (Write), reads and vets them (Read), and serves
// images from them (Loader), loading a bundle into Docker once and tagging
// nothing itself.
//
// A bundle is the Engine's own `docker save` archive, streamed through as it
// comes (never held in memory), with one more member appended: the
// manifest, prefetch/bundle.json, naming for each image its expected
// reference, its image ID and what kind of ID that is, and the registry
// digest when known. `docker load` reads a bundle as it reads any save
// (both the classic and the containerd image stores skip a member they
// don't know).
//
// Four decisions make loading safe:
//
//   - Images are saved by image ID, so the archive names no tag and loading
//     it tags nothing: a load can never move a tag already on the node.
//     Read refuses an archive that names one (RepoTags in manifest.json, a
//     repositories file, name annotations in index.json), whoever made it,
//     and reads member names as the Engine extracts them, so that no other
//     spelling or link can hand the Engine a manifest Read did not see: no
//     absolute name, no "..", metadata names only as regular files at the
//     root, no hard link, and no symlink but the layer links docker save
//     writes (see checkMember).
//   - What was loaded is verified before anything is tagged: the Engine
//     reports the IDs it loaded ("Loaded image ID: ..."), and each expected
//     reference gets the ID the manifest names for it only if the Engine
//     loaded exactly that ID. IDs are content addresses (the config digest
//     on the classic image store, the manifest or index digest on the
//     containerd store), so the content is what the manifest says. The
//     classic store computes the ID from what it loaded; the containerd
//     store takes the digests index.json names on trust (Docker 29.7.2
//     reports "Loaded image ID" for an image whose content never came), so
//     every blob must hash to its name and each image index.json names must
//     be in the archive whole, its config and layers (see vetIndex). The
//     manifest says which kind its image_id is, and records the config
//     digest too when the archive shows it, so a classic-store node can
//     verify a bundle written on the containerd store.
//   - A config's digest pin is met only by proof, not by the manifest's
//     word: the archive holds the blob of that digest, it hashes to it, and
//     it leads to the ID the Engine loaded (see proveDigest).
//   - A bundle that is truncated or corrupt fails as a whole: Read walks the
//     whole archive's structure before the Engine sees a byte, the Engine
//     reports a bad layer inside its answer, and no image of a failed load
//     is tagged.
//
// A peer's one-image transfer is not kept as a file: Loader.Stream sends it
// to the Engine as it is read, making the same checks on the way, and
// holds back the members a load reads to know what it holds and tags until
// the whole archive has been vetted; a refusal ends the Engine's load
// before it has them.
//
// It imports registry (the Engine's save, load and inspect, through the
// small Engine interface it declares) and nothing else of the project's;
// it must not import config, agent, daemon or cmd: the agent uses a Loader
// through an interface of its own.
package bundle
