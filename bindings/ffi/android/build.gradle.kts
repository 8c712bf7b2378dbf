// Courier for Android: a library module. Include this directory in an app's Gradle build
// (settings.gradle.kts: include(":courier"); project(":courier").projectDir =
// file("path/to/bindings/ffi/android")) after scripts/build-android.sh filled
// src/main/jniLibs (the .so per ABI) and src/main/kotlin (the generated Kotlin).
plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "dev.courier"
    compileSdk = 35

    defaultConfig {
        minSdk = 24
        consumerProguardFiles("consumer-rules.pro")
    }

    sourceSets {
        getByName("main") {
            java.srcDirs("src/main/kotlin")
            jniLibs.srcDirs("src/main/jniLibs")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    packaging {
        // Uncompressed, page-aligned .so files (built with 16 KiB pages) load in place.
        jniLibs.useLegacyPackaging = false
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    // The generated Kotlin calls the library through JNA; the @aar carries JNA's own
    // native part for each Android ABI.
    implementation("net.java.dev.jna:jna:5.14.0@aar")
    // Every Courier method is a suspend function.
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-core:1.8.1")
    // RequiresApi in the Android flavour of the generated Kotlin.
    implementation("androidx.annotation:annotation:1.8.2")
}
