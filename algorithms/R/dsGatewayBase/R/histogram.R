# Histograms: histogramDS1 (range), histogramDS2 (counts).
#
# method.indicator: 1 = "smallCellsRule" (counts below nfilter.tab are zeroed),
# 2 = "deterministic" (values replaced by the scaled centroids of their k nearest
# neighbours), 3 = "probabilistic" (values plus normal noise of variance
# noise * var(x)). Methods 1 and 3 draw random numbers from the site's seed,
# option `datashield.seed`; the session's random number stream is left as it was.

# Run `expr` with the RNG seeded from option datashield.seed, then restore the
# session's .Random.seed (or remove it if there was none).
.with_site_seed <- function(expr, fname) {
  seed <- getOption("datashield.seed")
  if (is.null(seed)) {
    stop(paste0(fname, " requires 'datashield.seed' R option to operate"), call. = FALSE)
  }
  genv <- globalenv()
  had.seed <- exists(".Random.seed", envir = genv, inherits = FALSE)
  if (had.seed) old.seed <- get(".Random.seed", envir = genv, inherits = FALSE)
  on.exit({
    if (had.seed) {
      assign(".Random.seed", old.seed, envir = genv)
    } else if (exists(".Random.seed", envir = genv, inherits = FALSE)) {
      rm(".Random.seed", envir = genv)
    }
  }, add = TRUE)
  set.seed(seed)
  force(expr)
}

# For each value of x, the mean of its k nearest neighbours (the value itself
# included), as RANN::nn2 would find them in one dimension.
.knn_centroids <- function(x, k) {
  n <- length(x)
  ord <- order(x)
  s <- x[ord]
  best.start <- rep(NA_integer_, n)
  best.width <- rep(Inf, n)
  pos <- seq_len(n)
  # the k nearest neighbours of s[i] are a window s[start:(start+k-1)] holding i
  for (offset in 0:(k - 1)) {
    start <- pos - offset
    ok <- start >= 1 & start + k - 1 <= n
    width <- rep(Inf, n)
    width[ok] <- pmax(s[pos[ok]] - s[start[ok]], s[start[ok] + k - 1] - s[pos[ok]])
    better <- width < best.width
    best.width[better] <- width[better]
    best.start[better] <- start[better]
  }
  csum <- c(0, cumsum(s))
  centroid.sorted <- (csum[best.start + k] - csum[best.start]) / k
  out <- numeric(n)
  out[ord] <- centroid.sorted
  out
}

.check_k <- function(k, n, nfilter.kNN) {
  if (is.null(k) || k < nfilter.kNN || k > (n - nfilter.kNN)) {
    stop(paste0("k must be greater than or equal to ", nfilter.kNN,
                " and less than or equal to ", (n - nfilter.kNN), "."), call. = FALSE)
  }
}

.check_noise <- function(noise, nfilter.noise) {
  if (is.null(noise) || noise < nfilter.noise) {
    stop(paste0("'noise' must be greater than or equal to ", nfilter.noise), call. = FALSE)
  }
}

# Method 2: the deterministic anonymisation of x (NAs removed).
.knn_masked <- function(x, k) {
  std <- (x - mean(x)) / stats::sd(x)
  centroids <- .knn_centroids(std, k)
  masked <- centroids * (stats::sd(std) / stats::sd(centroids))
  masked * stats::sd(x) + mean(x)
}

#' Range of a numeric vector, blurred (aggregate, first step of ds.histogram).
#'
#' Returns c(min, max): for method 1 the true extremes scaled outwards by a
#' random 1-5 %, for methods 2 and 3 the extremes of the anonymised values.
histogramDS1 <- function(xvect, method.indicator, k, noise) {
  if (!is.numeric(xvect)) return("The input vector is not a numeric!")
  nfilter.kNN <- .nfilter("nfilter.kNN")
  nfilter.noise <- .nfilter("nfilter.noise")
  if (method.indicator == 1) {
    lo <- min(xvect, na.rm = TRUE)
    hi <- max(xvect, na.rm = TRUE)
    return(.with_site_seed({
      lo <- lo * if (lo < 0) stats::runif(1, 1.01, 1.05) else stats::runif(1, 0.95, 0.99)
      hi <- hi * if (hi < 0) stats::runif(1, 0.95, 0.99) else stats::runif(1, 1.01, 1.05)
      c(lo, hi)
    }, "histogramDS1"))
  }
  x <- as.vector(stats::na.omit(xvect))
  if (method.indicator == 2) {
    .check_k(k, length(x), nfilter.kNN)
    x.new <- .knn_masked(x, k)
    return(c(min(x.new), max(x.new)))
  }
  if (method.indicator == 3) {
    .check_noise(noise, nfilter.noise)
    x.new <- .with_site_seed(x + stats::rnorm(length(x), 0, sqrt(noise * stats::var(x))),
                             "histogramDS")
    return(c(min(x.new), max(x.new)))
  }
  stop("FAILED: method.indicator must be 1, 2 or 3", call. = FALSE)
}

#' Histogram counts (aggregate, second step of ds.histogram).
#'
#' Returns list(histobject = a graphics "histogram" object, invalidcells). Refused
#' when num.breaks exceeds nfilter.levels.density times the length of the vector.
#' Method 1 zeroes the counts and densities of the bins with a count between 1 and
#' nfilter.tab - 1 and reports how many there were.
histogramDS2 <- function(xvect, num.breaks, min, max, method.indicator, k, noise) {
  nfilter.tab <- .nfilter("nfilter.tab")
  nfilter.kNN <- .nfilter("nfilter.kNN")
  nfilter.noise <- .nfilter("nfilter.noise")
  density <- .nfilter("nfilter.levels.density")
  breaks <- function() {
    if (num.breaks > density * length(xvect)) {
      stop("FAILED: Number of breaks is too big. It may be disclosive - please shorten",
           call. = FALSE)
    }
    seq(from = min, to = max, by = (max - min) / num.breaks)
  }
  make_hist <- function(values, brks, xname) {
    h <- graphics::hist(values, breaks = brks, plot = FALSE)
    h$xname <- xname  # the names dsBase's histogram objects carry
    h
  }
  if (method.indicator == 1) {
    h <- make_hist(xvect, breaks(), "xvect")
    small <- which(h$counts > 0 & h$counts < nfilter.tab)
    if (length(small) > 0) {  # (counts stay integer when nothing is zeroed)
      h$counts[small] <- 0
      h$density[small] <- 0
    }
    return(list(histobject = h, invalidcells = length(small)))
  }
  x <- as.vector(stats::na.omit(xvect))
  if (method.indicator == 2) {
    .check_k(k, length(x), nfilter.kNN)
    x.new <- .knn_masked(x, k)
  } else if (method.indicator == 3) {
    .check_noise(noise, nfilter.noise)
    x.new <- .with_site_seed(x + stats::rnorm(length(x), 0, sqrt(noise * stats::var(x))),
                             "histogramDS")
  } else {
    stop("FAILED: method.indicator must be 1, 2 or 3", call. = FALSE)
  }
  list(histobject = make_hist(x.new, breaks(), "x.new"), invalidcells = 0)
}
