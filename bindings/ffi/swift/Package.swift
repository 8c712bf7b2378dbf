// swift-tools-version:5.9
// Courier for iOS: the generated Swift API over the Rust library.
// scripts/build-xcframework.sh (on a Mac) builds Courier.xcframework beside this file:
// the static library for devices and the simulator with the C header and module map
// (module CourierFFI). scripts/generate-swift.sh regenerates Sources/ and Headers/.
import PackageDescription

let package = Package(
    name: "Courier",
    platforms: [.iOS(.v15)],
    products: [
        .library(name: "Courier", targets: ["Courier"]),
    ],
    targets: [
        .binaryTarget(name: "CourierFFI", path: "Courier.xcframework"),
        .target(
            name: "Courier",
            dependencies: ["CourierFFI"],
            path: "Sources/Courier"
        ),
    ]
)
